import math

import numpy as np
import pymatching
import pytest

from decoder import CodeSpec, MatchingDecoder
from training.evaluate import evaluate, evaluate_sweep, sweep_specs
from decoder.stats import per_round, wilson_interval


def test_wilson_interval_contains_rate_and_shrinks():
    lo, hi = wilson_interval(50, 10_000)
    assert lo < 0.005 < hi
    lo2, hi2 = wilson_interval(500, 100_000)
    assert hi2 - lo2 < (hi - lo) / 3
    assert wilson_interval(0, 100)[0] == 0.0


def test_per_round_inverts_the_shot_rate():
    e = 0.001
    shot = (1 - (1 - 2 * e) ** 7) / 2
    assert per_round(shot, 7) == pytest.approx(e)
    assert per_round(0.6, 3) == 0.5


def test_evaluate_matches_an_independent_stim_pymatching_run():
    """d=5, r=5, p=0.003 matching: ~3.3e-3 per shot. Independent 100k-shot runs must agree
    within 4 standard errors of the difference (false alarm ~6e-5)."""
    spec = CodeSpec(5, 5, 0.003)
    shots = 100_000
    result = evaluate(spec, MatchingDecoder.from_spec(spec), shots=shots, seed=11)
    events, obs = spec.circuit().compile_detector_sampler(seed=99).sample(shots, separate_observables=True)
    predicted = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events)
    direct = np.any(predicted != obs, axis=1).mean()
    pooled = (result["ler"] + direct) / 2
    sigma = math.sqrt(2 * pooled * (1 - pooled) / shots)
    assert abs(result["ler"] - direct) < 4 * sigma
    assert 2.5e-3 < result["ler"] < 4.2e-3
    assert result["ler_ci"][0] < result["ler"] < result["ler_ci"][1]


def test_evaluate_ratios_are_paired_counts_on_the_same_shots(never_flips):
    """A planted decoder that never predicts a flip errs exactly on the shots whose observable flipped;
    evaluate's counts, ratios and disagreements against both PyMatching modes equal counts made here
    with PyMatching on the same 20,000 shots."""
    spec = CodeSpec(5, 5, 0.005)
    result = evaluate(spec, never_flips(spec), shots=20_000, seed=11)
    events, obs = spec.circuit().compile_detector_sampler(seed=11).sample(20_000, separate_observables=True)
    flipped = np.any(obs, axis=1).sum()
    assert result["errors"] == flipped
    for prefix, ratio_key, disagreements_key, correlations in (("baseline_", "ler_ratio", "disagreements", False),
                                                              ("correlated_", "correlated_ratio",
                                                               "correlated_disagreements", True)):
        matching = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=correlations)
        predicted = matching.decode_batch(events, enable_correlations=correlations).astype(bool)
        errors = np.any(predicted != obs, axis=1).sum()
        assert result[f"{prefix}errors"] == errors and result[ratio_key] == pytest.approx(flipped / errors)
        assert result[disagreements_key] == np.any(predicted, axis=1).sum()
    assert result["correlated_errors"] < result["baseline_errors"]


def test_sweep_keys_and_seeds():
    specs = sweep_specs([3, 5], [0.002, 0.004], None, "z", "depolarizing")
    assert [(s.distance, s.rounds, s.p) for s in specs] == [(3, 3, 0.002), (3, 3, 0.004), (5, 5, 0.002), (5, 5, 0.004)]
    results = evaluate_sweep(specs, "matching", shots=2000, seed=1)
    for key in ("ler", "ler_ci", "errors", "shots", "decode_shots_per_s", "baseline_ler", "ler_ratio", "spec"):
        assert all(key in r for r in results)
    assert len({r["seed"] for r in results}) == 4
    # Higher p, more logical errors (at d=3 the gap is large).
    assert results[1]["errors"] > results[0]["errors"]
