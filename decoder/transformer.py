"""The transformer pipeline: the network answers unless it is unsure, out of range or failing.

Fallback to matching when (a) the network's confidence |p - 0.5| is below the threshold,
(b) the request's spec differs from the model's, or (c) running the model raises.
"""

from __future__ import annotations

import logging

import numpy as np

from decoder.events import as_bool_events
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.layout import Layout
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec

log = logging.getLogger(__name__)


class TransformerPipeline(Decoder):
    """``transformer``: network prediction with per-shot matching fallback.

    ``run`` maps dense float32 events ``[N, 2, T, H, W]`` to observable logits ``[N, O]``.
    """

    name = "transformer"
    chunk_shots = 1024  # attention memory grows with shots x tokens^2

    def __init__(self, spec: CodeSpec, model_spec: CodeSpec, run, fallback_threshold: float,
                 correlations: bool = False):
        self.spec = spec
        self.model_spec = model_spec
        self.run = run
        self.fallback_threshold = fallback_threshold
        self.matching = MatchingDecoder(spec.dem(), correlations=correlations)
        self.layout = Layout.from_circuit(spec.circuit())
        self.num_detectors = self.matching.num_detectors
        self.num_observables = self.matching.num_observables
        self.in_range = model_spec.same_geometry(spec)

    def probabilities(self, bits: np.ndarray) -> np.ndarray:
        """Network probability of each observable flip, ``float32 [shots, O]``."""
        logits = self.run(self.layout.to_dense(bits))
        return (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        bits = as_bool_events(detection_events, self.num_detectors)
        shots = len(bits)
        stage = np.full(shots, Stage.MATCHING, dtype=np.uint8)
        confidence = np.full(shots, 0.5, dtype=np.float32)
        observables = np.zeros((shots, self.num_observables), dtype=bool)
        if shots and self.in_range:
            try:
                probabilities = self.probabilities(bits)
                confidence = np.abs(probabilities - 0.5).min(axis=1)
                confident = confidence >= self.fallback_threshold
                observables[confident] = probabilities[confident] > 0.5
                stage[confident] = Stage.NETWORK
            except Exception:  # (c): the model failed; matching answers every shot
                log.exception("transformer model failed; falling back to matching")
                confidence[:] = 0.5
        unsure = stage == Stage.MATCHING
        if unsure.any():
            observables[unsure] = self.matching.decode_batch(bits[unsure])
        return DecodeResult(observables=observables, stage=stage, confidence=confidence)
