"""The one interface every decoder and pipeline implements, shaped like PyMatching's."""

from __future__ import annotations

import abc
import dataclasses
import enum

import numpy as np


class Stage(enum.IntEnum):
    """Which stage of a pipeline answered a shot."""

    MATCHING = 0  # PyMatching alone (baseline, residual or fallback)
    NETWORK = 1  # a neural network answered (possibly with matching on its residual)


@dataclasses.dataclass
class DecodeResult:
    """Predictions for a batch plus per-shot metadata.

    ``observables``: ``bool [shots, num_observables]``; ``stage``: ``uint8 [shots]`` of
    :class:`Stage`; ``confidence``: ``float32 [shots]`` in [0, 0.5] (|p - 0.5| of the
    answering stage, 0.5 for matching); ``extra``: optional per-shot arrays a pipeline reports.
    """

    observables: np.ndarray
    stage: np.ndarray
    confidence: np.ndarray
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def rows(self, rows: slice) -> "DecodeResult":
        """The result of a slice of the batch's shots."""
        return DecodeResult(self.observables[rows], self.stage[rows], self.confidence[rows],
                            {key: value[rows] for key, value in self.extra.items()})


class Decoder(abc.ABC):
    """``decode_batch(detection_events) -> observable_flips`` over numpy arrays.

    Detection events are ``bool [shots, num_detectors]`` or bit-packed ``uint8``
    ``[shots, ceil(num_detectors / 8)]``; predictions are ``bool [shots, num_observables]``.
    """

    name: str
    num_detectors: int
    num_observables: int

    @abc.abstractmethod
    def decode_batch_with_info(self, detection_events: np.ndarray) -> DecodeResult:
        """Decode a batch and report, per shot, which stage answered and how confidently."""

    def decode_batch(self, detection_events: np.ndarray) -> np.ndarray:
        """Decode a batch of shots into ``bool [shots, num_observables]`` observable flips."""
        return self.decode_batch_with_info(detection_events).observables
