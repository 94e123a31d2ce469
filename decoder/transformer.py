"""The transformer pipeline: the network answers unless it is unsure, out of range or failing.

Fallback to matching when (a) the network's confidence |p - 0.5| is below the threshold,
(b) the request's spec differs from the model's, or (c) running the model raises. A model
failure is counted, not hidden: ``extra["network_failed"]`` is 1 for every shot of a chunk whose
model call raised (and it is logged). A model that answers in the wrong shape is a broken
bundle, not a passing failure: that is an NqecError, as are errors of the pipeline itself.
"""

from __future__ import annotations

import logging

import numpy as np

from decoder.errors import NqecError
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

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The network's logits ``[shots, O]`` -> probability of each observable flip, ``float32 [shots, O]``."""
        return (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        bits = as_bool_events(detection_events, self.num_detectors)
        shots = len(bits)
        stage = np.full(shots, Stage.MATCHING, dtype=np.uint8)
        confidence = np.full(shots, 0.5, dtype=np.float32)
        observables = np.zeros((shots, self.num_observables), dtype=bool)
        failed = np.zeros(shots, dtype=np.uint8)
        logits = None
        if shots and self.in_range:
            try:
                logits = np.asarray(self.run(self.layout.to_dense(bits)))
            except Exception:  # (c): the model failed; matching answers every shot, and the failure is counted
                log.exception("transformer model failed on %d shots; matching answers them", shots)
                failed[:] = 1
        if logits is not None:
            if logits.shape != (shots, self.num_observables):
                raise NqecError(f"the transformer model answered logits of shape {list(logits.shape)}; "
                                f"expected [{shots}, {self.num_observables}] (one per shot and observable)")
            probabilities = self.probabilities(logits)
            confidence = np.abs(probabilities - 0.5).min(axis=1)
            confident = confidence >= self.fallback_threshold
            observables[confident] = probabilities[confident] > 0.5
            stage[confident] = Stage.NETWORK
        unsure = stage == Stage.MATCHING
        if unsure.any():
            observables[unsure] = self.matching.decode_batch(bits[unsure])
        return DecodeResult(observables=observables, stage=stage, confidence=confidence,
                            extra={"network_failed": failed})
