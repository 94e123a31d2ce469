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
from decoder.experiment import CircuitSpec, check_same_structure, with_dem
from decoder.interface import Decoder
from decoder.registry import build_decoder, build_matching
from decoder.spec import CodeSpec


class CompiledNqecDecoder(sinter.CompiledDecoder):
    """A built nqec decoder speaking sinter's bit-packed protocol."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def decode_shots_bit_packed(self, *, bit_packed_detection_event_data: np.ndarray) -> np.ndarray:
        return pack_bits(self.decoder.decode_batch(bit_packed_detection_event_data))


class NqecSinterDecoder(sinter.Decoder):
    """Sinter adapter for the nqec decoder ``name``.

    ``matching`` and ``matching-correlated`` decode any task: they need nothing but its DEM. A neural
    decoder also needs the experiment its network reads (``spec``: a :class:`CodeSpec` or a circuit
    file's :class:`CircuitSpec`, for the detector coordinates a DEM lacks) and a ``model``; it decodes
    a task whose DEM has that experiment's detectors (at the same coordinates) and edges, with the
    task's own probabilities, and refuses any other task naming what differs.
    """

    def __init__(self, name: str = "matching", spec: CodeSpec | CircuitSpec | None = None, model: str | None = None):
        self.name = name
        self.spec = spec
        self.model = model

    def compile_decoder_for_dem(self, *, dem: stim.DetectorErrorModel) -> sinter.CompiledDecoder:
        if self.name in ("matching", "matching-correlated"):
            return CompiledNqecDecoder(build_matching(self.name, dem))
        if self.spec is None:
            raise NqecError(f"sinter decoder {self.name!r} needs the experiment its network reads "
                            "(spec=CodeSpec(...) or CircuitSpec.from_file(...))")
        what, of = "the sinter task's DEM", f"{self.spec.label()}'s"
        check_same_structure(dem, self.spec.dem(), what, of)
        if dem.get_detector_coordinates() != self.spec.dem().get_detector_coordinates():
            raise NqecError(f"{what} places its detectors at other coordinates than {of}")
        return CompiledNqecDecoder(build_decoder(self.name, with_dem(self.spec, dem), self.model))


def sinter_decoders() -> dict[str, sinter.Decoder]:
    """Custom decoders for ``sinter.collect(custom_decoders=...)`` that need no model."""
    return {"nqec-matching": NqecSinterDecoder("matching"),
            "nqec-matching-correlated": NqecSinterDecoder("matching-correlated")}
