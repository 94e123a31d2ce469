"""Logical error rates on shared shots: one frozen record per decoder, ratios from records.

Every decoder of a comparison decodes the same Stim shots, sampled chunk by chunk so memory
stays bounded however many shots are asked for. Each decoder's outcome is a
:class:`DecoderStats` record (like sinter's ``TaskStats``): a new baseline is a new record,
and ratios are computed from records.

Example:
    >>> from decoder import CodeSpec, MatchingDecoder
    >>> spec = CodeSpec(3, 3, 0.003)
    >>> stats = decode_same_shots(spec, {"matching": MatchingDecoder.from_spec(spec),
    ...     "matching-correlated": MatchingDecoder.from_spec(spec, correlations=True)}, shots=2000, seed=1)
    >>> stats["matching"].shots, ratio(stats["matching"], stats["matching"])
    (2000, 1.0)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping

import numpy as np

from decoder.events import unpack_bits
from decoder.interface import Decoder, Stage
from decoder.spec import CodeSpec
from decoder.stats import per_round, wilson_interval

SAMPLE_CHUNK = 65536  # shots sampled (and handed to each decoder) at a time


@dataclasses.dataclass(frozen=True)
class DecoderStats:
    """One decoder's outcome on a set of shots.

    ``disagreements`` counts shots whose prediction differs from the comparison's first
    decoder; ``counts`` holds per-shot quantities summed over shots (stages answered,
    a pipeline's extras such as defects before and after).
    """

    decoder: str
    shots: int = 0
    errors: int = 0
    seconds: float = 0.0
    disagreements: int = 0
    counts: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __add__(self, other: "DecoderStats") -> "DecoderStats":
        counts = dict(self.counts)
        for key, value in other.counts.items():
            counts[key] = counts.get(key, 0.0) + value
        return DecoderStats(self.decoder, self.shots + other.shots, self.errors + other.errors,
                            self.seconds + other.seconds, self.disagreements + other.disagreements, counts)

    @property
    def ler(self) -> float:
        """Logical error rate per shot."""
        return self.errors / self.shots if self.shots else 0.0

    @property
    def ler_ci(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`ler`."""
        return wilson_interval(self.errors, self.shots)

    @property
    def shots_per_s(self) -> float | None:
        return self.shots / self.seconds if self.seconds > 0 else None

    def mean(self, key: str) -> float:
        """Per-shot mean of a summed count."""
        return self.counts.get(key, 0.0) / self.shots if self.shots else 0.0

    def to_dict(self, rounds: int) -> dict:
        """JSON-ready: counts, rates with intervals (per shot and per round) and speed."""
        low, high = self.ler_ci
        return {"decoder": self.decoder, "shots": self.shots, "errors": self.errors, "ler": self.ler,
                "ler_ci": [low, high], "ler_per_round": per_round(self.ler, rounds),
                "ler_per_round_ci": [per_round(low, rounds), per_round(high, rounds)],
                "seconds": self.seconds, "shots_per_s": self.shots_per_s, "disagreements": self.disagreements,
                "counts": dict(self.counts)}


def ratio(stats: DecoderStats, baseline: DecoderStats) -> float | None:
    """``stats.ler / baseline.ler`` on the same shots (None when the baseline made no error)."""
    return stats.ler / baseline.ler if baseline.errors else None


def decode_same_shots(spec: CodeSpec, decoders: Mapping[str, Decoder], shots: int, seed: int,
                      on_progress: Callable[[int], None] | None = None) -> dict[str, DecoderStats]:
    """Sample ``shots`` Stim shots of ``spec`` (seeded) and decode them with every decoder.

    Returns one :class:`DecoderStats` per key of ``decoders``; disagreements are counted
    against the first decoder.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    circuit = spec.circuit()
    sampler = circuit.compile_detector_sampler(seed=seed)
    totals = {label: DecoderStats(label) for label in decoders}
    done = 0
    while done < shots:
        n = min(SAMPLE_CHUNK, shots - done)
        events, obs_packed = sampler.sample(n, separate_observables=True, bit_packed=True)
        chunk, _ = decode_and_count(decoders, events, unpack_bits(obs_packed, circuit.num_observables))
        totals = {label: totals[label] + chunk[label] for label in totals}
        done += n
        if on_progress:
            on_progress(n)
    return totals


def decode_and_count(decoders: Mapping[str, Decoder], events: np.ndarray,
                     actual: np.ndarray) -> tuple[dict[str, DecoderStats], np.ndarray]:
    """Decode one chunk of shots (bool or bit-packed) with every decoder, against the true observable
    flips ``actual`` (``bool [shots, num_observables]``): each decoder's record of the chunk, and the
    first decoder's predictions (disagreements are counted against them)."""
    records, first = {}, None
    for label, decoder in decoders.items():
        start = time.perf_counter()
        result = decoder.decode_batch_with_info(events)
        seconds = time.perf_counter() - start
        first = result.observables if first is None else first
        stages = np.bincount(result.stage, minlength=len(Stage))
        counts = {f"stage_{stage.name.lower()}": float(stages[stage]) for stage in Stage}
        counts.update({key: float(np.sum(values)) for key, values in result.extra.items()})
        records[label] = DecoderStats(label, len(events), int(np.any(result.observables != actual, axis=1).sum()),
                                      seconds, int(np.any(result.observables != first, axis=1).sum()), counts)
    return records, first
