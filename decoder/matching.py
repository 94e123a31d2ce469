"""PyMatching on the decomposed DEM: the baseline, the residual decoder and the fallback."""

from __future__ import annotations

import numpy as np
import pymatching
import stim

from decoder.events import is_bit_packed
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.spec import CodeSpec


class MatchingDecoder(Decoder):
    """Minimum-weight perfect matching of a detector error model.

    Example:
        >>> spec = CodeSpec(distance=3, rounds=3, p=0.001)
        >>> decoder = MatchingDecoder.from_spec(spec)
        >>> events, obs = spec.circuit().compile_detector_sampler(seed=1).sample(
        ...     100, separate_observables=True)
        >>> decoder.decode_batch(events).shape
        (100, 1)
    """

    name = "matching"

    def __init__(self, dem: stim.DetectorErrorModel):
        self.dem = dem
        self.matching = pymatching.Matching.from_detector_error_model(dem)
        self.num_detectors = dem.num_detectors
        self.num_observables = dem.num_observables

    @classmethod
    def from_spec(cls, spec: CodeSpec) -> "MatchingDecoder":
        return cls(spec.dem())

    def decode_batch(self, detection_events: np.ndarray) -> np.ndarray:
        packed = is_bit_packed(detection_events, self.num_detectors)
        if len(detection_events) == 0:
            return np.zeros((0, self.num_observables), dtype=bool)
        shots = detection_events if packed else detection_events.astype(np.uint8, copy=False)
        predictions = self.matching.decode_batch(shots, bit_packed_shots=packed)
        return predictions.astype(bool, copy=False)

    def decode_batch_with_info(self, detection_events: np.ndarray) -> DecodeResult:
        observables = self.decode_batch(detection_events)
        shots = len(observables)
        return DecodeResult(
            observables=observables,
            stage=np.full(shots, Stage.MATCHING, dtype=np.uint8),
            confidence=np.full(shots, 0.5, dtype=np.float32),
        )
