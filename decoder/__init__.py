"""nqec decoding library: code specs, layouts, matching, models, pipelines and bundles.

This package imports none of ``training``, ``server`` or ``fpga``.
"""

from decoder.errors import NqecError
from decoder.spec import CodeSpec
from decoder.layout import Layout
from decoder.interface import Decoder, DecodeResult, Stage
from decoder.matching import MatchingDecoder

__all__ = ["NqecError", "CodeSpec", "Layout", "Decoder", "DecodeResult", "Stage", "MatchingDecoder"]
