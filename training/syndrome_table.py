"""Deduplicated training data for small codes: each distinct syndrome once, with its flip rate.

Training on ``N`` raw samples minimises ``sum_i BCE(f(s_i), y_i)``. Grouping the samples by
syndrome gives the same objective, ``sum_s n_s * BCE(f(s), k_s / n_s)``, where ``n_s`` counts
syndrome ``s`` and ``k_s`` its observable flips. At d=3 (24 detectors) 3e8 samples hold only
~4e5 distinct syndromes, so a network can see the data of 3e8 shots with soft targets (the
empirical posterior) instead of one noisy bit per shot: far fewer steps to learn the rare
syndromes where matching is wrong. Useless at d >= 5, where almost every syndrome is unique.

Example:
    >>> table = SyndromeTable.sample([CodeSpec(3, 3, 0.003)], shots=100_000, seed=1)
    >>> int(table.counts.sum()), table.events.shape[1] * 8 >= 24
    (100000, True)
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from decoder.events import packed_width, unpack_bits
from decoder.spec import CodeSpec

CHUNK = 1 << 21


@dataclasses.dataclass
class SyndromeTable:
    """Distinct bit-packed syndromes ``events`` ``uint8 [K, bytes]``, how often each was
    sampled (``counts`` ``[K]``) and how often each observable flipped with it (``flips`` ``[K, O]``)."""

    events: np.ndarray
    counts: np.ndarray
    flips: np.ndarray
    num_detectors: int

    @classmethod
    def sample(cls, specs: list[CodeSpec], shots: int, seed: int) -> "SyndromeTable":
        """Sample ``shots`` circuit shots, split evenly over ``specs`` (a p mixture), and count them."""
        circuit = specs[0].circuit()
        table = cls(np.zeros((0, packed_width(circuit.num_detectors)), np.uint8), np.zeros(0, np.int64),
                    np.zeros((0, circuit.num_observables), np.int64), circuit.num_detectors)
        for index, spec in enumerate(specs):
            sampler = spec.circuit().compile_detector_sampler(seed=seed + index)
            remaining = shots // len(specs) + (index < shots % len(specs))
            while remaining:
                chunk = min(CHUNK, remaining)
                events, observables = sampler.sample(chunk, separate_observables=True, bit_packed=True)
                table = table.merged(events, np.ones(chunk, np.int64), observables.astype(np.int64))
                remaining -= chunk
        return table

    def merged(self, events: np.ndarray, counts: np.ndarray, flips: np.ndarray) -> "SyndromeTable":
        """This table plus more rows (repeats allowed), equal syndromes merged."""
        events = np.concatenate([self.events, events])
        rows = np.ascontiguousarray(events).view(np.dtype((np.void, events.shape[1])))[:, 0]
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([self.counts, counts])).astype(np.int64)
        flips = np.concatenate([self.flips, flips])
        flips = np.stack([np.bincount(inverse, weights=column) for column in flips.T], axis=1).astype(np.int64)
        return SyndromeTable(events[first], counts, flips, self.num_detectors)

    @property
    def shots(self) -> int:
        return int(self.counts.sum())

    def stream(self, batch_size: int, seed: int, tempering: float = 0.5) -> Iterator[tuple[np.ndarray, ...]]:
        """Infinite ``(events bool [B, D], flip_rate float32 [B, O], weight float32 [B])`` batches.

        Syndromes are drawn with probability ``counts ** tempering`` and weighted by
        ``counts ** (1 - tempering)`` (normalised to mean 1 over the draw), so every
        ``tempering`` gives the raw-sample objective in expectation; below 1 the batches
        hold fewer copies of the all-quiet syndrome and more of the rare ones."""
        if not 0 <= tempering <= 1:
            raise ValueError(f"tempering must be in [0, 1], got {tempering}")
        counts = self.counts.astype(np.float64)
        draw = counts ** tempering
        draw /= draw.sum()
        weight = counts ** (1 - tempering)
        weight /= float(np.dot(weight, draw))
        rate = (self.flips / counts[:, None]).astype(np.float32)
        cumulative = np.cumsum(draw)
        rng = np.random.default_rng(seed)
        while True:
            rows = np.minimum(np.searchsorted(cumulative, rng.random(batch_size), side="right"), len(counts) - 1)
            yield unpack_bits(self.events[rows], self.num_detectors), rate[rows], weight[rows].astype(np.float32)
