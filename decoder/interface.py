"""The one interface every decoder and pipeline implements, shaped like PyMatching's."""

from __future__ import annotations

import abc
import dataclasses
import enum

import numpy as np

from decoder.events import is_bit_packed


class Stage(enum.IntEnum):
    """Which stage of a pipeline answered a shot (the wire values of proto/decoder.proto's ``Stage``)."""

    MATCHING = 0  # matching alone (baseline, residual or fallback; guided matching at mix 0)
    NETWORK = 1  # a neural network answered (with matching on its residual, or weighting matching)
    REFERENCE = 2  # an offline reference decoder (tesseract's search), neither matching nor a network


@dataclasses.dataclass
class DecodeResult:
    """Predictions for a batch plus per-shot metadata.

    ``observables``: ``bool [shots, num_observables]``; ``stage``: ``uint8 [shots]`` of
    :class:`Stage`; ``confidence``: ``float32 [shots]`` in [0, 0.5], ``|p - 0.5|`` for the
    probability ``p`` the pipeline's network gave: the transformer's least sure observable (also
    on a shot it sent to matching for being unsure), the pre-decoder's least sure applied edge,
    guided matching's least sure edge weight around the shot's events. Matching and the
    reference decoder give no probability: 0.5. ``extra``: optional per-shot arrays a pipeline
    reports (the same keys for every chunk).
    """

    observables: np.ndarray
    stage: np.ndarray
    confidence: np.ndarray
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def rows(self, rows: slice) -> "DecodeResult":
        """The result of a slice of the batch's shots."""
        return DecodeResult(self.observables[rows], self.stage[rows], self.confidence[rows],
                            {key: value[rows] for key, value in self.extra.items()})

    @classmethod
    def concatenate(cls, parts: list["DecodeResult"]) -> "DecodeResult":
        """The results of consecutive chunks of shots as one result."""
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.observables for p in parts]), np.concatenate([p.stage for p in parts]),
                   np.concatenate([p.confidence for p in parts]),
                   {key: np.concatenate([p.extra[key] for p in parts]) for key in parts[0].extra})


class Decoder(abc.ABC):
    """``decode_batch(detection_events) -> observable_flips`` over numpy arrays.

    Detection events are ``bool [shots, num_detectors]`` or bit-packed ``uint8``
    ``[shots, ceil(num_detectors / 8)]``; predictions are ``bool [shots, num_observables]``.
    A batch of any size is decoded ``chunk_shots`` shots at a time, so peak memory is bounded
    by the chunk, not the batch.
    """

    name: str
    num_detectors: int
    num_observables: int
    chunk_shots: int = 1 << 16

    @abc.abstractmethod
    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        """Decode at most ``chunk_shots`` validated shots (bool or bit-packed)."""

    def decode_batch_with_info(self, detection_events: np.ndarray) -> DecodeResult:
        """Decode a batch and report, per shot, which stage answered and how confidently."""
        is_bit_packed(detection_events, self.num_detectors)  # raises NqecError naming the expected shape
        shots, chunk = len(detection_events), self.chunk_shots
        if shots <= chunk:
            return self.decode_chunk(detection_events)
        return DecodeResult.concatenate([self.decode_chunk(detection_events[i: i + chunk])
                                         for i in range(0, shots, chunk)])

    def decode_batch(self, detection_events: np.ndarray) -> np.ndarray:
        """Decode a batch of shots into ``bool [shots, num_observables]`` observable flips."""
        return self.decode_batch_with_info(detection_events).observables
