"""Logical error rates of a decoder on Stim shots or shot files, paired with both PyMatching modes on the same shots.

The experiment is a :class:`CodeSpec` or a circuit file's :class:`CircuitSpec`; shots are sampled
from its circuit and both baselines match its DEM. The decoder under test may be given another DEM
of the same structure (``decoder_dem``, e.g. estimated from detection events).
"""

from __future__ import annotations

import platform
import resource
from typing import Callable

import numpy as np

from decoder.evaluation import DecoderStats, decode_same_shots, ratio
from decoder.experiment import CircuitSpec, DemSpec, with_dem
from decoder.interface import Decoder, Stage
from decoder.matching import MatchingDecoder
from decoder.reference import build_reference
from decoder.errors import NqecError
from decoder.registry import build_decoder, build_matching, build_windowed_decoder
from decoder.shot_files import decode_file
from decoder.spec import CodeSpec

Experiment = CodeSpec | CircuitSpec

# baseline record -> (prefix of its keys, its ratio key, its disagreements key) in the evaluation JSON
BASELINES = {"matching": ("baseline_", "ler_ratio", "disagreements"),
             "matching-correlated": ("correlated_", "correlated_ratio", "correlated_disagreements")}


def point_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th point of a sweep, derived from the sweep's seed."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(spec: Experiment, decoder: Decoder, shots: int, seed: int, baseline: bool = True,
             on_progress: Callable[[int], None] | None = None, reference: str | None = None) -> dict:
    """Sample ``shots`` shots of ``spec`` and decode them with ``decoder``, both PyMatching modes on
    ``spec``'s DEM (unless ``baseline`` is False) and the ``reference`` decoder (if named), all on the
    same shots. A matching ``decoder`` on ``spec``'s own DEM is its own baseline; on another DEM it is
    recorded as ``"<name> (decoder DEM)"`` beside both baselines.

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
    own_dem = getattr(decoder, "dem", None) is spec.dem()
    label = decoder.name if own_dem or decoder.name not in BASELINES else f"{decoder.name} (decoder DEM)"
    decoders: dict[str, Decoder] = {label: decoder}
    if baseline:
        for name in BASELINES:
            if name != label:
                decoders[name] = build_matching(name, spec.dem())
    if reference is not None:
        decoders["reference"] = build_reference(reference, spec)
    records = decode_same_shots(spec, decoders, shots, seed, on_progress)
    main, rounds = records[label], rounds_of(spec)
    result = {"decoder": decoder.name, "spec": spec.to_dict(), "seed": seed, **_rates("", main, rounds),
              "stage_fraction": {stage.name.lower(): main.mean(f"stage_{stage.name.lower()}") for stage in Stage}}
    extras = {key: main.mean(key) for key in main.counts if not key.startswith("stage_")}
    result.update(extras)
    for label, (prefix, ratio_key, disagreements_key) in BASELINES.items():
        if label in records:
            result.update(_rates(prefix, records[label], rounds))
            result[ratio_key] = ratio(main, records[label])
            result[disagreements_key] = records[label].disagreements
    if reference is not None:
        result.update(_rates("reference_", records["reference"], rounds), reference=reference,
                      reference_ratio=ratio(main, records["reference"]))
    if "defects_before" in extras:
        result["residual_defect_fraction"] = extras["defects_after"] / max(extras["defects_before"], 1e-12)
    residual_mode = getattr(getattr(decoder, "matching", None), "name", None)
    if "residual_matching_seconds" in extras and residual_mode in records:
        raw = records[residual_mode].seconds / records[residual_mode].shots
        result["matching_speedup"] = raw / max(extras["residual_matching_seconds"], 1e-15)
        result["residual_matching"] = residual_mode
    result["records"] = {label: stats.to_dict(rounds) for label, stats in records.items()}
    result["peak_rss_mb"] = peak_rss_mb()
    result["machine"] = platform.node()
    return result


def rounds_of(spec) -> int:
    """Rounds for per-round rates: the experiment's, 1 for a circuit that is not a surface-code memory."""
    return getattr(spec, "rounds", None) or 1


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


def evaluate_sweep(specs: list[Experiment], decoder_name: str, shots: int, seed: int, baseline: bool = True,
                   model: str | None = None, on_progress: Callable[[int], None] | None = None,
                   matching: str | None = None, reference: str | None = None,
                   decoder_dem: str | None = None, windowed: bool = False) -> list[dict]:
    """Evaluate ``decoder_name`` at every spec; point ``i`` uses seed ``point_seed(seed, i)``.
    ``windowed``: the decoder's sliding-window form decodes the experiments (the baselines decode
    them whole).

    ``decoder_dem``: a ``.dem`` file whose probabilities the decoder under test uses (matching's
    weights, a neural pipeline's prior and residual matching); it must have the structure of each
    spec's DEM. The baselines keep each spec's own DEM."""
    given = DemSpec(decoder_dem) if decoder_dem else None
    results = []
    for index, spec in enumerate(specs):
        if windowed:
            if given:
                raise NqecError("--windowed and --decoder-dem cannot be combined yet")
            decoder = build_windowed_decoder(decoder_name, spec, model, matching=matching)
        else:
            decoder = build_decoder(decoder_name, with_dem(spec, given.dem()) if given else spec, model,
                                    matching=matching)
        record = evaluate(spec, decoder, shots, point_seed(seed, index), baseline, on_progress, reference)
        record.update(model=model, sweep_seed=seed, windowed=windowed)
        if given:
            record["decoder_dem"] = given.to_dict()
        results.append(record)
    return results


def decode_shot_file(experiment: Experiment | DemSpec, decoder_name: str, events_path: str, events_format: str,
                     out_path: str, out_format: str, *, model: str | None = None, matching: str | None = None,
                     obs_path: str | None = None, obs_format: str = "b8",
                     on_progress: Callable[[int], None] | None = None) -> dict:
    """Decode a shot file of ``experiment`` with ``decoder_name`` and write its predictions to ``out_path``.

    With ``obs_path`` (the shots' true observable flips), both PyMatching modes decode the same
    shots too, and the result has ``ler``, ``ler_ci``, ``baseline_*``, ``correlated_*``,
    ``ler_ratio`` and ``correlated_ratio`` as :func:`evaluate` gives them.

    Example:
        >>> import tempfile, pathlib, stim
        >>> spec, folder = CodeSpec(3, 3, 0.01), pathlib.Path(tempfile.mkdtemp())
        >>> events, obs = spec.circuit().compile_detector_sampler(seed=1).sample(1000, separate_observables=True)
        >>> stim.write_shot_data_file(data=events, path=folder / "dets.b8", format="b8", num_detectors=24)
        >>> stim.write_shot_data_file(data=obs, path=folder / "obs.b8", format="b8", num_observables=1)
        >>> result = decode_shot_file(spec, "matching-correlated", folder / "dets.b8", "b8", folder / "obs.01", "01",
        ...                           obs_path=folder / "obs.b8")
        >>> result["shots"], result["errors"] == result["correlated_errors"], result["correlated_ratio"]
        (1000, True, 1.0)
    """
    decoder = build_decoder(decoder_name, experiment, model, matching=matching)
    decoders = {decoder.name: decoder}
    if obs_path is not None:
        decoders.update({name: build_matching(name, experiment.dem()) for name in BASELINES if name != decoder.name})
    records = decode_file(decoders, events_path, events_format, out_path, out_format, obs_path=obs_path,
                          obs_format=obs_format, on_progress=on_progress)
    main, rounds = records[decoder.name], rounds_of(experiment)
    result = {"decoder": decoder.name, "model": model, "experiment": experiment.to_dict(),
              "in": str(events_path), "in_format": events_format, "out": str(out_path), "out_format": out_format,
              "shots": main.shots, "decode_seconds": main.seconds, "decode_shots_per_s": main.shots_per_s}
    if obs_path is not None:
        result.update(obs_in=str(obs_path), obs_in_format=obs_format, **_rates("", main, rounds))
        for label, (prefix, ratio_key, _) in BASELINES.items():
            result.update(_rates(prefix, records[label], rounds))
            result[ratio_key] = ratio(main, records[label])
        result["records"] = {label: stats.to_dict(rounds) for label, stats in records.items()}
    result["peak_rss_mb"] = peak_rss_mb()
    result["machine"] = platform.node()
    return result
