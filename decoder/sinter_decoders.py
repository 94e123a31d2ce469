"""nqec decoders as sinter custom decoders, so sinter.collect can compare them with pymatching.

Example:
    >>> import sinter
    >>> from decoder import CodeSpec
    >>> spec = CodeSpec(3, 3, 0.005)
    >>> task = sinter.Task(circuit=spec.circuit(), json_metadata={"d": 3})
    >>> stats = sinter.collect(num_workers=1, tasks=[task], decoders=["nqec-matching"],
    ...                        custom_decoders=sinter_decoders(), max_shots=1000)
    >>> stats[0].shots
    1000
"""

from __future__ import annotations

import numpy as np
import sinter
import stim

from decoder.errors import NqecError
from decoder.events import pack_bits
from decoder.interface import Decoder
from decoder.matching import MatchingDecoder
from decoder.registry import build_decoder
from decoder.spec import CodeSpec


class CompiledNqecDecoder(sinter.CompiledDecoder):
    """A built nqec decoder speaking sinter's bit-packed protocol."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def decode_shots_bit_packed(self, *, bit_packed_detection_event_data: np.ndarray) -> np.ndarray:
        return pack_bits(self.decoder.decode_batch(bit_packed_detection_event_data))


class NqecSinterDecoder(sinter.Decoder):
    """Sinter adapter for the nqec decoder ``name``.

    ``matching`` and ``matching-correlated`` need nothing but the task's DEM. Neural decoders also need the task's
    ``spec`` (and a ``model``), since a network is tied to one experiment's layout.
    """

    def __init__(self, name: str = "matching", spec: CodeSpec | None = None, model: str | None = None):
        self.name = name
        self.spec = spec
        self.model = model

    def compile_decoder_for_dem(self, *, dem: stim.DetectorErrorModel) -> sinter.CompiledDecoder:
        if self.name in ("matching", "matching-correlated"):
            return CompiledNqecDecoder(MatchingDecoder(dem, correlations=self.name == "matching-correlated"))
        if self.spec is None:
            raise NqecError(f"sinter decoder {self.name!r} needs the task's CodeSpec (spec=...)")
        decoder = build_decoder(self.name, self.spec, self.model)
        if decoder.num_detectors != dem.num_detectors:
            raise NqecError(f"decoder {self.name!r} expects {decoder.num_detectors} detectors, "
                            f"the task's DEM has {dem.num_detectors}")
        return CompiledNqecDecoder(decoder)


def sinter_decoders() -> dict[str, sinter.Decoder]:
    """Custom decoders for ``sinter.collect(custom_decoders=...)`` that need no model."""
    return {"nqec-matching": NqecSinterDecoder("matching"),
            "nqec-matching-correlated": NqecSinterDecoder("matching-correlated")}
