"""PyMatching on the decomposed DEM: the baseline, the residual decoder and the fallback.

Two modes: uncorrelated (fastest) and correlated (PyMatching's ``enable_correlations``:
X-Z correlations from the DEM's decomposed hyperedges, ~2.5-3.5x slower, far more accurate
from d=5 up). ``MATCHING_MODES`` names them for command lines and manifests.
"""

from __future__ import annotations

import numpy as np
import pymatching
import stim

from decoder.errors import NqecError
from decoder.events import is_bit_packed
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.spec import CodeSpec

MATCHING_MODES = ("uncorrelated", "correlated")


def correlations_of(mode: str) -> bool:
    """``"correlated"`` -> True, ``"uncorrelated"`` -> False; anything else is an error."""
    if mode not in MATCHING_MODES:
        raise NqecError(f"matching mode must be one of {', '.join(MATCHING_MODES)}, got {mode!r}")
    return mode == "correlated"


class MatchingDecoder(Decoder):
    """Minimum-weight perfect matching of a detector error model.

    Example:
        >>> spec = CodeSpec(distance=3, rounds=3, p=0.001)
        >>> decoder = MatchingDecoder.from_spec(spec)
        >>> events, obs = spec.circuit().compile_detector_sampler(seed=1).sample(
        ...     100, separate_observables=True)
        >>> decoder.decode_batch(events).shape
        (100, 1)
        >>> MatchingDecoder.from_spec(spec, correlations=True).name
        'matching-correlated'
    """

    def __init__(self, dem: stim.DetectorErrorModel, *, correlations: bool = False):
        self.dem = dem
        self.correlations = correlations
        self.name = "matching-correlated" if correlations else "matching"
        self.mode = MATCHING_MODES[int(correlations)]
        self.matching = pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlations)
        self.num_detectors = dem.num_detectors
        self.num_observables = dem.num_observables

    @classmethod
    def from_spec(cls, spec: CodeSpec, *, correlations: bool = False) -> "MatchingDecoder":
        return cls(spec.dem(), correlations=correlations)

    def with_dem(self, dem: stim.DetectorErrorModel) -> "MatchingDecoder":
        """Matching of ``dem`` (e.g. re-estimated from detection events) in this decoder's mode."""
        return MatchingDecoder(dem, correlations=self.correlations)

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        packed = is_bit_packed(detection_events, self.num_detectors)
        shots = len(detection_events)
        if shots == 0:
            observables = np.zeros((0, self.num_observables), dtype=bool)
        else:
            events = detection_events if packed else detection_events.astype(np.uint8, copy=False)
            observables = self.matching.decode_batch(events, bit_packed_shots=packed,
                                                     enable_correlations=self.correlations).astype(bool, copy=False)
        return DecodeResult(
            observables=observables,
            stage=np.full(shots, Stage.MATCHING, dtype=np.uint8),
            confidence=np.full(shots, 0.5, dtype=np.float32),
        )
