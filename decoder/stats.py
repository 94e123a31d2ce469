"""Statistics for logical error rates: Wilson intervals and per-round rates."""

from __future__ import annotations

import math


def wilson_interval(errors: int, shots: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% (by default) Wilson score interval for a binomial rate ``errors / shots``.

    Example:
        >>> lo, hi = wilson_interval(33, 10000)
        >>> round(lo, 5), round(hi, 5)
        (0.00235, 0.00463)
    """
    if shots <= 0:
        return (0.0, 1.0)
    rate = errors / shots
    denom = 1 + z * z / shots
    centre = (rate + z * z / (2 * shots)) / denom
    half = z * math.sqrt(rate * (1 - rate) / shots + z * z / (4 * shots * shots)) / denom
    low = 0.0 if errors == 0 else max(0.0, centre - half)
    high = 1.0 if errors == shots else min(1.0, centre + half)
    return (low, high)


def per_round(ler_shot: float, rounds: int) -> float:
    """Per-round logical error rate ``e`` with ``ler_shot = (1 - (1 - 2e)^rounds) / 2``.

    Rates at or above 0.5 per shot saturate at 0.5 per round.
    """
    if ler_shot >= 0.5:
        return 0.5
    return (1 - (1 - 2 * ler_shot) ** (1 / rounds)) / 2
