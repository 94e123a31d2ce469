"""The C++ weighted matcher (decoder/_weighted_matching) with the DEM prior's weights against
PyMatching on the same shots: agreement and decode speed, uncorrelated and correlated.

    .venv/bin/python results/matcher_speed.py [--json results/matcher-speed.json]

Times decode calls only (the per-shot weight array is built before the clock starts; building it
is part of guided matching's cost, reported separately as ``weights_us_per_shot``). Best of
``REPEATS`` timings per decoder; the two decoders alternate so both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pymatching

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decoder import CodeSpec  # noqa: E402
from decoder.guided import WeightedMatcher, conditional_weights, prior_logits  # noqa: E402
from decoder.predecoder import PreDecoderGeometry  # noqa: E402

POINTS = [(5, 0.003, 20_000), (5, 0.005, 20_000), (9, 0.003, 5_000), (13, 0.003, 2_000)]
REPEATS = 3
SEED = 8


def best_time(function, repeats: int = REPEATS) -> tuple[float, np.ndarray]:
    best, answer = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        answer = function()
        best = min(best, time.perf_counter() - start)
    return best, answer


def measure(distance: int, p: float, shots: int) -> dict:
    spec = CodeSpec(distance, distance, p)
    dem = spec.dem()
    edges = PreDecoderGeometry(spec).edges
    prior = prior_logits(dem, edges)
    events, _ = spec.circuit().compile_detector_sampler(seed=SEED).sample(shots, separate_observables=True)
    start = time.perf_counter()
    weights = np.tile(-prior, (shots, 1))
    weights_seconds = time.perf_counter() - start
    row = {"distance": distance, "rounds": distance, "p": p, "shots": shots, "seed": SEED,
           "weights_us_per_shot": 1e6 * weights_seconds / shots}
    for mode, correlated in (("uncorrelated", False), ("correlated", True)):
        ours = WeightedMatcher(edges, -prior, conditional_weights(dem, edges) if correlated else None)
        theirs = pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlated)
        ours_s, ours_answer = best_time(lambda: ours.decode(events, weights))
        theirs_s, theirs_answer = best_time(lambda: theirs.decode_batch(events, enable_correlations=correlated).astype(bool))
        row[mode] = {"weighted_us_per_shot": 1e6 * ours_s / shots, "pymatching_us_per_shot": 1e6 * theirs_s / shots,
                     "speed_vs_pymatching": theirs_s / ours_s,
                     "shots_differing": int(np.any(ours_answer != theirs_answer, axis=1).sum())}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for point in POINTS:
        row = measure(*point)
        rows.append(row)
        print(json.dumps(row))
    out = {"what": "C++ weighted matcher with prior weights vs PyMatching 2.x on the same Stim shots "
                   "(rotated memory Z, depolarizing, r = d); decode time only, best of 3",
           "rows": rows, "pymatching": pymatching.__version__, "machine": f"{platform.node()} ({platform.machine()})",
           "date": time.strftime("%Y-%m-%d"),
           "command": "nice -n 10 .venv/bin/python results/matcher_speed.py --json results/matcher-speed.json"}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
