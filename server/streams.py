"""Per-experiment state of a DecodeStream: which slice comes next, how wide it is, what adding it
produced. The service only moves bytes; decoding lives in ``decoder`` (windows) or in the
model's batcher (fixed-length experiments, decoded when their last round arrives)."""

from __future__ import annotations

import dataclasses

import numpy as np

from decoder.events import unpack_bits
from server.models import ServedModel


class StreamError(Exception):
    """A round that cannot be accepted; the message names what was expected."""


@dataclasses.dataclass
class Update:
    """What rounds produced: nothing yet, a committed correction (``partial``), the answer
    (``final``), or a whole fixed-length experiment to decode (``complete``)."""

    partial: np.ndarray | None = None
    final: np.ndarray | None = None
    complete: np.ndarray | None = None
    rounds_committed: int = 0


class FixedLengthExperiments:
    """Rounds of fixed-length experiments, buffered bit-packed (as they came) until the last one.

    The last round is not kept: if decoding the complete experiments is refused, the client can
    send the last round again."""

    def __init__(self, model: ServedModel, experiments: int, stream_corrections: bool = False):
        self.model, self.experiments = model, experiments
        self.rounds: list[np.ndarray] = []  # bit-packed uint8 [experiments, bytes of the round]

    @property
    def received(self) -> int:
        return len(self.rounds)

    @property
    def progress(self) -> str:
        return f"{self.received} of {len(self.model.detectors_per_round)} rounds"

    @property
    def reserved_bytes(self) -> int:
        """Most bytes of event data these experiments can hold: every round but the last, packed."""
        return self.experiments * sum((size + 7) // 8 for size in self.model.detectors_per_round[:-1])

    def slice_size(self, last: bool, ahead: int = 0) -> int:
        """Detectors of the round ``ahead`` rounds after the next one."""
        sizes = self.model.detectors_per_round
        if self.received + ahead >= len(sizes):
            raise StreamError(f"has only {len(sizes)} rounds")
        return sizes[self.received + ahead]

    def add(self, packed: list[np.ndarray], last: bool) -> Update:
        """Add the next rounds (bit-packed, one array each), the final one if ``last``."""
        update = Update()
        for k, rows in enumerate(packed):
            update = self._add_one(rows, last and k == len(packed) - 1)
        return update

    def _add_one(self, packed: np.ndarray, last: bool) -> Update:
        sizes = self.model.detectors_per_round
        if last and self.received + 1 != len(sizes):
            raise StreamError(f"ended after {self.received + 1} rounds; model {self.model.name!r} needs {len(sizes)}")
        if not last:
            if self.received + 1 == len(sizes):
                raise StreamError(f"round {self.received} is the model's last ({len(sizes)} rounds): mark it last=true")
            self.rounds.append(packed.copy())
            return Update()
        bits = [unpack_bits(p, size) for p, size in zip([*self.rounds, packed], sizes)]
        return Update(complete=np.concatenate(bits, axis=1))


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

    @property
    def reserved_bytes(self) -> int:
        """Most bytes of event data these experiments can hold: one window of unpacked slices."""
        windowed = self.model.windowed
        largest = max(windowed.first_slice, windowed.bulk_slice, windowed.final_slice)
        return self.experiments * ((windowed.span + 1) * largest + windowed.num_observables)

    def slice_size(self, last: bool, ahead: int = 0) -> int:
        """Detectors of the slice ``ahead`` slices after the next one (the final one if ``last``)."""
        windowed = self.model.windowed
        if self.received + ahead == 0:
            if last:
                raise StreamError("needs at least one round before its final data-measurement slice")
            return windowed.first_slice
        return windowed.final_slice if last else windowed.bulk_slice

    def add(self, packed: list[np.ndarray], last: bool) -> Update:
        """Add the next slices (bit-packed, one array each), the final one if ``last``: the rounds
        before it go to the windows in one call (the compiled window loop, for matching). One
        partial correction covers all the windows they committed; with the final slice, the
        answer (the whole frame) stands for it."""
        rounds = packed[:-1] if last else packed
        committed = None
        if rounds:
            bits = np.concatenate([unpack_bits(p, self.slice_size(False, k)) for k, p in enumerate(rounds)], axis=1)
            committed = self.windows.push_slices(bits, len(rounds))
        if last:
            final = self.windows.finish(unpack_bits(packed[-1], self.slice_size(True)))
            return Update(final=final, rounds_committed=self.windows.committed_slices)
        if committed is None or not self.stream_corrections:
            return Update()
        return Update(partial=committed, rounds_committed=self.windows.committed_slices)


def open_experiments(model: ServedModel, experiments: int, stream_corrections: bool):
    """The stream state for ``experiments`` experiments of ``model``."""
    kind = AnyLengthExperiments if model.windowed is not None else FixedLengthExperiments
    return kind(model, experiments, stream_corrections)
