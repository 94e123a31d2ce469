"""Logical error rates of a decoder on Stim shots, paired with both PyMatching modes on the same shots."""

from __future__ import annotations

import platform
import resource
from typing import Callable

import numpy as np

from decoder.evaluation import DecoderStats, decode_same_shots, ratio
from decoder.interface import Decoder, Stage
from decoder.matching import MatchingDecoder
from decoder.reference import build_reference
from decoder.registry import build_decoder
from decoder.spec import CodeSpec

# baseline record -> (prefix of its keys, its ratio key, its disagreements key) in the evaluation JSON
BASELINES = {"matching": ("baseline_", "ler_ratio", "disagreements"),
             "matching-correlated": ("correlated_", "correlated_ratio", "correlated_disagreements")}


def point_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th point of a sweep, derived from the sweep's seed."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(spec: CodeSpec, decoder: Decoder, shots: int, seed: int, baseline: bool = True,
             on_progress: Callable[[int], None] | None = None, reference: str | None = None) -> dict:
    """Sample ``shots`` shots of ``spec`` and decode them with ``decoder``, both PyMatching modes
    (unless ``baseline`` is False) and the ``reference`` decoder (if named), all on the same shots.

    Returns a JSON-ready dict: ``ler``, ``ler_ci``, ``errors``, ``shots``, ``decode_shots_per_s``;
    ``baseline_ler`` and ``ler_ratio`` against uncorrelated matching; ``correlated_ler``,
    ``correlated_ler_ci`` and ``correlated_ratio`` against correlated matching; ``reference_*``;
    every decoder's record under ``records``; ``peak_rss_mb``, ``spec`` and more.

    Example:
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> result = evaluate(spec, MatchingDecoder.from_spec(spec), shots=1000, seed=0)
        >>> result["shots"], result["ler"] == result["baseline_ler"], "correlated_ratio" in result
        (1000, True, True)
    """
    decoders: dict[str, Decoder] = {decoder.name: decoder}
    if baseline:
        for label in BASELINES:
            if label != decoder.name:
                decoders[label] = MatchingDecoder.from_spec(spec, correlations=label == "matching-correlated")
    if reference is not None:
        decoders["reference"] = build_reference(reference, spec)
    records = decode_same_shots(spec, decoders, shots, seed, on_progress)
    main = records[decoder.name]
    result = {"decoder": decoder.name, "spec": spec.to_dict(), "seed": seed, **_rates("", main, spec.rounds),
              "stage_fraction": {stage.name.lower(): main.mean(f"stage_{stage.name.lower()}") for stage in Stage}}
    extras = {key: main.mean(key) for key in main.counts if not key.startswith("stage_")}
    result.update(extras)
    for label, (prefix, ratio_key, disagreements_key) in BASELINES.items():
        if label in records:
            result.update(_rates(prefix, records[label], spec.rounds))
            result[ratio_key] = ratio(main, records[label])
            result[disagreements_key] = records[label].disagreements
    if reference is not None:
        result.update(_rates("reference_", records["reference"], spec.rounds), reference=reference,
                      reference_ratio=ratio(main, records["reference"]))
    if "defects_before" in extras:
        result["residual_defect_fraction"] = extras["defects_after"] / max(extras["defects_before"], 1e-12)
    residual_mode = getattr(getattr(decoder, "matching", None), "name", None)
    if "residual_matching_seconds" in extras and residual_mode in records:
        raw = records[residual_mode].seconds / records[residual_mode].shots
        result["matching_speedup"] = raw / max(extras["residual_matching_seconds"], 1e-15)
        result["residual_matching"] = residual_mode
    result["records"] = {label: stats.to_dict(spec.rounds) for label, stats in records.items()}
    result["peak_rss_mb"] = peak_rss_mb()
    result["machine"] = platform.node()
    return result


def _rates(prefix: str, stats: DecoderStats, rounds: int) -> dict:
    """The JSON keys of one record under ``prefix``."""
    record = stats.to_dict(rounds)
    keys = {"errors": "errors", "ler": "ler", "ler_ci": "ler_ci", "shots_per_s": "decode_shots_per_s"}
    if not prefix:
        keys.update(shots="shots", ler_per_round="ler_per_round", ler_per_round_ci="ler_per_round_ci",
                    seconds="decode_seconds")
    return {f"{prefix}{name}": record[key] for key, name in keys.items()}


def sweep_specs(distances: list[int], ps: list[float], rounds: int | None, basis: str, noise: str) -> list[CodeSpec]:
    """Every (distance, p) point of a sweep; ``rounds=None`` means rounds = distance."""
    return [CodeSpec(distance=d, rounds=d if rounds is None else rounds, p=p, basis=basis, noise=noise) for d in distances for p in ps]


def evaluate_sweep(specs: list[CodeSpec], decoder_name: str, shots: int, seed: int, baseline: bool = True,
                   model: str | None = None, on_progress: Callable[[int], None] | None = None,
                   matching: str | None = None, reference: str | None = None) -> list[dict]:
    """Evaluate ``decoder_name`` at every spec; point ``i`` uses seed ``point_seed(seed, i)``."""
    results = []
    for index, spec in enumerate(specs):
        decoder = build_decoder(decoder_name, spec, model, matching=matching)
        record = evaluate(spec, decoder, shots, point_seed(seed, index), baseline, on_progress, reference)
        record.update(model=model, sweep_seed=seed)
        results.append(record)
    return results
