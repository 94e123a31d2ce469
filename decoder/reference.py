"""A near-optimal reference decoder for offline studies: tesseract (optional extra ``reference``).

Tesseract is a search decoder (A* over error sets with a detector beam). It is far slower
than matching (~500 shots/s at d=5) and answers how much accuracy is left below matching.
"""

from __future__ import annotations

import numpy as np

from decoder.errors import NqecError
from decoder.events import as_bool_events
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.spec import CodeSpec

REFERENCE_DECODERS = ("tesseract",)
INSTALL_HINT = "pip install -e '.[reference]' (or make reference)"


class TesseractReference(Decoder):
    """Tesseract on the experiment's undecomposed DEM (beam 20, beam climbing, 20 detector orders)."""

    name = "tesseract"
    chunk_shots = 4096

    def __init__(self, spec: CodeSpec, det_beam: int = 20, det_orders: int = 20, seed: int = 0):
        try:
            from tesseract_decoder import tesseract, utils
        except ImportError:
            raise NqecError(f"the tesseract reference decoder needs the 'reference' extra: {INSTALL_HINT}") from None
        dem = spec.circuit().detector_error_model(decompose_errors=False)
        orders = utils.build_det_orders(dem, num_det_orders=det_orders, method=utils.DetOrder.DetBFS, seed=seed)
        config = tesseract.TesseractConfig(dem=dem, det_beam=det_beam, beam_climbing=True, det_orders=orders)
        self.decoder = tesseract.TesseractDecoder(config)
        self.num_detectors = dem.num_detectors
        self.num_observables = dem.num_observables

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        bits = as_bool_events(detection_events, self.num_detectors)
        shots = len(bits)
        observables = (self.decoder.decode_batch(bits).astype(bool) if shots
                       else np.zeros((0, self.num_observables), dtype=bool))
        return DecodeResult(observables, np.full(shots, Stage.REFERENCE, np.uint8), np.full(shots, 0.5, np.float32))


def build_reference(name: str, spec: CodeSpec) -> Decoder:
    """The reference decoder ``name`` for ``spec``; a missing extra is a one-line NqecError."""
    if name not in REFERENCE_DECODERS:
        raise NqecError(f"unknown reference decoder {name!r}; expected one of {', '.join(REFERENCE_DECODERS)}")
    return TesseractReference(spec)
