"""Per-experiment state of a DecodeStream: which slice comes next, how wide it is, what adding it
produced. The service only moves bytes; decoding lives in ``decoder`` (windows) or in the
model's batcher (fixed-length experiments, decoded when their last round arrives)."""

from __future__ import annotations

import dataclasses

import numpy as np

from server.models import ServedModel


class StreamError(Exception):
    """A round that cannot be accepted; the message names what was expected."""


@dataclasses.dataclass
class Update:
    """What a round produced: nothing yet, a committed correction (``partial``), the answer
    (``final``), or a whole fixed-length experiment to decode (``complete``)."""

    partial: np.ndarray | None = None
    final: np.ndarray | None = None
    complete: np.ndarray | None = None
    rounds_committed: int = 0


class FixedLengthExperiments:
    """Rounds of fixed-length experiments, buffered until the last one."""

    def __init__(self, model: ServedModel, experiments: int, stream_corrections: bool = False):
        self.model, self.experiments = model, experiments
        self.rounds: list[np.ndarray] = []

    @property
    def received(self) -> int:
        return len(self.rounds)

    @property
    def progress(self) -> str:
        return f"{self.received} of {len(self.model.detectors_per_round)} rounds"

    def slice_size(self, last: bool) -> int:
        sizes = self.model.detectors_per_round
        if self.received >= len(sizes):
            raise StreamError(f"has only {len(sizes)} rounds")
        return sizes[self.received]

    def add(self, bits: np.ndarray, last: bool) -> Update:
        self.rounds.append(bits)
        if not last:
            return Update()
        if self.received != len(self.model.detectors_per_round):
            raise StreamError(f"ended after {self.received} rounds; model {self.model.name!r} needs "
                              f"{len(self.model.detectors_per_round)}")
        return Update(complete=np.concatenate(self.rounds, axis=1))


class AnyLengthExperiments:
    """Slices of experiments of any length, decoded window by window as they arrive."""

    def __init__(self, model: ServedModel, experiments: int, stream_corrections: bool = False):
        self.model, self.experiments = model, experiments
        self.windows = model.windowed.open(experiments)
        self.stream_corrections = stream_corrections

    @property
    def received(self) -> int:
        return self.windows.next_slice

    @property
    def progress(self) -> str:
        return f"{self.received} rounds, before the final data-measurement slice"

    def slice_size(self, last: bool) -> int:
        windowed = self.model.windowed
        if self.received == 0:
            if last:
                raise StreamError("needs at least one round before its final data-measurement slice")
            return windowed.first_slice
        return windowed.final_slice if last else windowed.bulk_slice

    def add(self, bits: np.ndarray, last: bool) -> Update:
        if last:
            return Update(final=self.windows.finish(bits), rounds_committed=self.windows.committed_slices)
        committed = self.windows.push(bits)
        if committed is None or not self.stream_corrections:
            return Update()
        return Update(partial=committed, rounds_committed=self.windows.committed_slices)


def open_experiments(model: ServedModel, experiments: int, stream_corrections: bool):
    """The stream state for ``experiments`` experiments of ``model``."""
    kind = AnyLengthExperiments if model.windowed is not None else FixedLengthExperiments
    return kind(model, experiments, stream_corrections)
