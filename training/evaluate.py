"""Logical error rates of a decoder on Stim shots, always paired with PyMatching on the same shots."""

from __future__ import annotations

import platform
import time
from typing import Callable

import numpy as np

from decoder.events import unpack_bits
from decoder.interface import Decoder, Stage
from decoder.matching import MatchingDecoder
from decoder.registry import build_decoder
from decoder.spec import CodeSpec
from training.stats import per_round, wilson_interval

CHUNK_SHOTS = 65536


def point_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th point of a sweep, derived from the sweep's seed."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def evaluate(spec: CodeSpec, decoder: Decoder, shots: int, seed: int, baseline: bool = True,
             on_progress: Callable[[int], None] | None = None) -> dict:
    """Sample ``shots`` shots of ``spec`` and decode them with ``decoder`` (and matching).

    Returns a JSON-ready dict with ``ler``, ``ler_ci``, ``errors``, ``shots``,
    ``decode_shots_per_s``, ``baseline_ler``, ``ler_ratio``, ``spec`` and more.

    Example:
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> result = evaluate(spec, MatchingDecoder.from_spec(spec), shots=1000, seed=0)
        >>> result["shots"], result["ler"] == result["baseline_ler"]
        (1000, True)
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    circuit = spec.circuit()
    sampler = circuit.compile_detector_sampler(seed=seed)
    is_matching = isinstance(decoder, MatchingDecoder)
    reference = None if (is_matching or not baseline) else MatchingDecoder.from_spec(spec)
    totals = {"errors": 0, "baseline_errors": 0, "disagreements": 0, "decode_s": 0.0, "baseline_s": 0.0}
    stage_counts = np.zeros(len(Stage), dtype=np.int64)
    extra_sums: dict[str, float] = {}
    done = 0
    while done < shots:
        n = min(CHUNK_SHOTS, shots - done)
        events, obs_packed = sampler.sample(n, separate_observables=True, bit_packed=True)
        actual = unpack_bits(obs_packed, circuit.num_observables)
        start = time.perf_counter()
        result = decoder.decode_batch_with_info(events)
        totals["decode_s"] += time.perf_counter() - start
        wrong = np.any(result.observables != actual, axis=1)
        totals["errors"] += int(wrong.sum())
        stage_counts += np.bincount(result.stage, minlength=len(Stage))
        for key, values in result.extra.items():
            extra_sums[key] = extra_sums.get(key, 0.0) + float(np.sum(values))
        if reference is not None:
            start = time.perf_counter()
            reference_predictions = reference.decode_batch(events)
            totals["baseline_s"] += time.perf_counter() - start
            totals["baseline_errors"] += int(np.any(reference_predictions != actual, axis=1).sum())
            totals["disagreements"] += int(np.any(reference_predictions != result.observables, axis=1).sum())
        done += n
        if on_progress:
            on_progress(n)

    record = {
        "decoder": decoder.name,
        "spec": spec.to_dict(),
        "seed": seed,
        **_rates(totals["errors"], shots, spec.rounds),
        "decode_seconds": totals["decode_s"],
        "decode_shots_per_s": shots / totals["decode_s"] if totals["decode_s"] > 0 else None,
        "stage_fraction": {stage.name.lower(): float(stage_counts[stage]) / shots for stage in Stage},
        **{key: value / shots for key, value in extra_sums.items()},
        "machine": platform.node(),
    }
    if is_matching and baseline:
        record.update(baseline_errors=record["errors"], baseline_ler=record["ler"], baseline_ler_ci=record["ler_ci"],
                      baseline_decode_shots_per_s=record["decode_shots_per_s"], disagreements=0)
    elif reference is not None:
        base = _rates(totals["baseline_errors"], shots, spec.rounds)
        record.update(baseline_errors=base["errors"], baseline_ler=base["ler"], baseline_ler_ci=base["ler_ci"],
                      baseline_decode_shots_per_s=shots / totals["baseline_s"] if totals["baseline_s"] > 0 else None,
                      disagreements=totals["disagreements"])
    if baseline:
        record["ler_ratio"] = record["ler"] / record["baseline_ler"] if record["baseline_ler"] > 0 else None
    if "defects_before" in record:
        record["residual_defect_fraction"] = record["defects_after"] / max(record["defects_before"], 1e-12)
    if "residual_matching_seconds" in record and record.get("baseline_decode_shots_per_s"):
        raw_seconds_per_shot = 1 / record["baseline_decode_shots_per_s"]
        record["matching_speedup"] = raw_seconds_per_shot / max(record["residual_matching_seconds"], 1e-15)
    return record


def _rates(errors: int, shots: int, rounds: int) -> dict:
    low, high = wilson_interval(errors, shots)
    return {
        "errors": errors,
        "shots": shots,
        "ler": errors / shots,
        "ler_ci": [low, high],
        "ler_per_round": per_round(errors / shots, rounds),
        "ler_per_round_ci": [per_round(low, rounds), per_round(high, rounds)],
    }


def sweep_specs(distances: list[int], ps: list[float], rounds: int | None, basis: str, noise: str) -> list[CodeSpec]:
    """Every (distance, p) point of a sweep; ``rounds=None`` means rounds = distance."""
    return [CodeSpec(distance=d, rounds=d if rounds is None else rounds, p=p, basis=basis, noise=noise) for d in distances for p in ps]


def evaluate_sweep(specs: list[CodeSpec], decoder_name: str, shots: int, seed: int, baseline: bool = True,
                   model: str | None = None, on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Evaluate ``decoder_name`` at every spec; point ``i`` uses seed ``point_seed(seed, i)``."""
    results = []
    for index, spec in enumerate(specs):
        decoder = build_decoder(decoder_name, spec, model)
        record = evaluate(spec, decoder, shots, point_seed(seed, index), baseline, on_progress)
        record.update(model=model, sweep_seed=seed)
        results.append(record)
    return results
