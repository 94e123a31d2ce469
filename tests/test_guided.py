"""Guided matching: per-shot weights on a graph built once, from real networks and an oracle."""

import numpy as np
import pymatching
import pytest

from decoder import CodeSpec, Layout, NqecError, Stage
from decoder.edges import EdgeTable
from decoder.bundle import Bundle
from decoder.guided import GuidedMatchingPipeline, WeightedMatcher, conditional_weights, prior_logits
from decoder.predecoder import PreDecoderGeometry
from decoder.registry import build_decoder
from training.calibrate import calibrate_guided


@pytest.mark.parametrize("d", [3, 5, 9])
def test_prior_weights_reproduce_pymatching_exactly(d):
    """With the DEM's own weights the weighted matcher is plain matching, shot for shot, also
    after shots with other weights (each shot's weights are put back)."""
    spec = CodeSpec(d, d, 0.005)
    geometry = PreDecoderGeometry(spec)
    prior = prior_logits(spec.dem(), geometry.edges)
    events, _ = spec.circuit().compile_detector_sampler(seed=4).sample(5000, separate_observables=True)
    matcher = WeightedMatcher(geometry.edges, -prior)
    random_weights = np.random.default_rng(0).uniform(0, 20, (len(events), geometry.edges.num_edges))
    scrambled = matcher.decode(events, random_weights)
    ours = matcher.decode(events, np.tile(-prior, (len(events), 1)))
    direct = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events).astype(bool)
    assert np.array_equal(ours, direct)
    assert not np.array_equal(scrambled, direct)  # the random weights did reach the matching


def test_correlated_pass_with_prior_weights_is_pymatchings_correlated_mode():
    """Prior weights plus the conditional weights of the first matching: PyMatching's two-pass
    correlated matching; on 20,000 shots at d=5 they differ on at most 0.1% (rounding ties)."""
    spec = CodeSpec(5, 5, 0.005)
    geometry = PreDecoderGeometry(spec)
    prior = prior_logits(spec.dem(), geometry.edges)
    events, _ = spec.circuit().compile_detector_sampler(seed=8).sample(20_000, separate_observables=True)
    matcher = WeightedMatcher(geometry.edges, -prior, conditional_weights(spec.dem(), geometry.edges))
    ours = matcher.decode(events, np.tile(-prior, (len(events), 1)))
    direct = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=True).decode_batch(
        events, enable_correlations=True).astype(bool)
    assert np.sum(ours != direct) <= 20


def test_weighted_matcher_names_the_shapes_it_expects():
    spec = CodeSpec(3, 3, 0.005)
    geometry = PreDecoderGeometry(spec)
    prior = prior_logits(spec.dem(), geometry.edges)
    matcher = WeightedMatcher(geometry.edges, -prior)
    events = np.zeros((2, spec.dem().num_detectors), bool)
    with pytest.raises(NqecError, match=rf"expected events \[shots, {spec.dem().num_detectors}\] and weights "
                                        rf"\[2, {geometry.edges.num_edges}\]"):
        matcher.decode(events, np.zeros((3, geometry.edges.num_edges)))


def test_an_oracle_network_guides_matching_far_below_matching():
    spec = CodeSpec(5, 5, 0.006)
    geometry = PreDecoderGeometry(spec)
    events, obs, errors = spec.dem().compile_sampler(seed=3).sample(3000, return_errors=True)
    targets = geometry.targets(geometry.edges.labels(errors))
    served = 0

    def oracle(windows):  # the true edges of the windows asked for, in the order they are asked
        nonlocal served
        served += len(windows)
        return targets[served - len(windows): served] * 8 - 4

    pipeline = GuidedMatchingPipeline(spec, oracle, geometry.directions, window=3, mix=0.5)
    guided_errors = np.any(pipeline.decode_batch(events) != obs, axis=1).sum()
    matching_errors = np.any(build_decoder("matching", spec).decode_batch(events) != obs, axis=1).sum()
    assert guided_errors < matching_errors / 3


def test_guided_matching_is_a_decoder_name_for_predecoder_bundles():
    spec = CodeSpec(5, 5, 0.003)
    decoder = build_decoder("guided-matching", spec, "predecoder-fpga")
    assert decoder.name == "guided-matching"
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(200, separate_observables=True)
    assert decoder.decode_batch(events).shape == (200, 1)
    with pytest.raises(NqecError, match="transformer model: it serves transformer, not 'guided-matching'"):
        Bundle.load("transformer-d3").decoder(pipeline="guided-matching")
    assert build_decoder("guided-matching", spec, "predecoder-fpga", matching="correlated").matcher.correlated


def test_correlated_pass_at_mix_zero_is_as_good_as_pymatchings_correlated_mode():
    """Mix 0 with the correlated pass is our own correlated matching: on the same 30,000 shots it
    beats uncorrelated matching clearly and stays within 10% of PyMatching's correlated mode."""
    spec = CodeSpec(5, 5, 0.005)
    geometry = PreDecoderGeometry(spec)
    silent = lambda windows: np.zeros((len(windows), len(geometry.directions), *windows.shape[2:]), np.float32)
    ours = GuidedMatchingPipeline(spec, silent, geometry.directions, window=3, mix=0.0, correlations=True)
    events, obs = spec.circuit().compile_detector_sampler(seed=6).sample(30_000, separate_observables=True)
    errors = {name: int(np.any(decoder.decode_batch(events) != obs, axis=1).sum()) for name, decoder in
              (("ours", ours), ("plain", build_decoder("matching", spec)),
               ("correlated", build_decoder("matching-correlated", spec)))}
    assert errors["ours"] < 0.9 * errors["plain"], errors
    assert abs(errors["ours"] - errors["correlated"]) < 0.1 * errors["correlated"], errors


def test_calibration_includes_plain_matching_and_picks_the_fewest_errors():
    result = calibrate_guided(Bundle.load("predecoder-fpga"), CodeSpec(5, 5, 0.004), shots=3000, seed=9)
    plain = result["table"][0]
    assert (plain["matching"], plain["mix"], plain["errors"]) == ("uncorrelated", 0.0, result["matching_errors"])
    assert {row["matching"] for row in result["table"]} == {"uncorrelated", "correlated"}
    best = min(row["errors"] for row in result["table"])
    assert any(row["errors"] == best and (row["matching"], row["mix"], row["temperature"])
               == (result["matching"], result["mix"], result["temperature"]) for row in result["table"])


def test_reliability_curve_bins_every_edge_prediction():
    from training.calibrate import reliability_curve

    result = reliability_curve(Bundle.load("predecoder-fpga"), CodeSpec(5, 5, 0.004), shots=500, seed=3)
    assert sum(b["count"] for b in result["bins"]) == result["edges_scored"] > 0
    assert all(b["low"] <= b["predicted"] < b["high"] and 0 <= b["observed"] <= 1 for b in result["bins"])
    # The shipped network is informative: edges it calls likely (> 0.5) fire far more often than unlikely ones.
    likely = [b["observed"] for b in result["bins"] if b["low"] >= 0.5]
    unlikely = [b["observed"] for b in result["bins"] if b["high"] <= 1e-3]
    assert min(likely) > 10 * max(unlikely) and 0 <= result["ece"] < 0.05


def test_at_mix_zero_guided_matching_is_plain_matching_and_says_so():
    """Mix 0 is plain matching: stage MATCHING (was NETWORK), confidence 0.5, the network not run."""
    spec = CodeSpec(3, 3, 0.005)
    geometry = PreDecoderGeometry(spec)

    def broken(windows):
        raise AssertionError("the network was run at mix 0")

    pipeline = GuidedMatchingPipeline(spec, broken, geometry.directions, window=3, mix=0.0)
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(300, separate_observables=True)
    result = pipeline.decode_batch_with_info(events)
    assert (result.stage == Stage.MATCHING).all() and (result.confidence == 0.5).all()
    assert np.array_equal(result.observables, build_decoder("matching", spec).decode_batch(events))


def test_guided_confidence_is_how_clear_the_weights_around_the_events_were():
    """A network that is sure of nothing (logit 0, p = 0.5) at mix 1 leaves every shot with
    events at confidence 0; a sure one (|logit| 20) near 0.5; shots without events 0.5.
    (Every shot used to report 0.5.)"""
    spec = CodeSpec(3, 3, 0.005)
    geometry = PreDecoderGeometry(spec)
    events, _ = spec.circuit().compile_detector_sampler(seed=2).sample(300, separate_observables=True)
    quiet = ~events.any(axis=1)
    assert 0 < quiet.sum() < len(events)
    for logit, expected in ((0.0, 0.0), (-20.0, 0.5)):
        runner = lambda windows: np.full((len(windows), len(geometry.directions), *windows.shape[2:]), logit, np.float32)
        result = GuidedMatchingPipeline(spec, runner, geometry.directions, window=3, mix=1.0).decode_batch_with_info(events)
        assert (result.stage == Stage.NETWORK).all()
        assert np.allclose(result.confidence[~quiet], expected, atol=1e-6) and (result.confidence[quiet] == 0.5).all()


def test_one_network_thread_serves_a_pipeline_for_its_life(monkeypatch):
    """Overlapped batches (over OVERLAP_SHOTS shots) share the pipeline's one network thread; a
    thread pool used to be made for every chunk."""
    import decoder.guided as guided

    pools = []

    class Counted(guided.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(guided, "ThreadPoolExecutor", Counted)
    spec = CodeSpec(3, 3, 0.005)
    geometry = PreDecoderGeometry(spec)
    silent = lambda windows: np.zeros((len(windows), len(geometry.directions), *windows.shape[2:]), np.float32)
    pipeline = GuidedMatchingPipeline(spec, silent, geometry.directions, window=3, mix=0.5)
    events, _ = spec.circuit().compile_detector_sampler(seed=3).sample(2 * guided.OVERLAP_SHOTS + 5,
                                                                      separate_observables=True)
    first = pipeline.decode_batch(events)
    assert np.array_equal(pipeline.decode_batch(events), first) and len(pools) == 1


def test_guided_matching_decodes_in_chunks_like_one_batch():
    """3000 shots in chunks of 999 (each matched in one go) give exactly the answers, stages and
    confidences of one batch (overlapped: the network on the next 1024 shots while matching runs)."""
    spec = CodeSpec(5, 5, 0.004)
    decoder = Bundle.load("predecoder-fpga").decoder(spec, pipeline="guided-matching")
    events, _ = spec.circuit().compile_detector_sampler(seed=5).sample(3000, separate_observables=True, bit_packed=True)
    decoder.chunk_shots = len(events)
    whole = decoder.decode_batch_with_info(events)
    decoder.chunk_shots = 999
    chunked = decoder.decode_batch_with_info(events)
    assert np.array_equal(whole.observables, chunked.observables) and np.array_equal(whole.stage, chunked.stage)
    assert np.allclose(whole.confidence, chunked.confidence, atol=1e-6)
    assert (whole.stage == Stage.NETWORK).all() and 0 < whole.confidence.min() < 0.5


@pytest.mark.parametrize("correlated", [False, True])
def test_decode_edges_is_a_matching_that_explains_the_events_and_gives_the_answer(correlated):
    """The matching as edges (what a sliding window commits): its detectors XOR to the shot's
    events and its observable masks to decode()'s answer, shot for shot."""
    spec = CodeSpec(5, 5, 0.006)
    edges = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
    prior = prior_logits(spec.dem(), edges)
    matcher = WeightedMatcher(edges, -prior, conditional_weights(spec.dem(), edges) if correlated else None)
    events = spec.circuit().compile_detector_sampler(seed=12).sample(3000)
    weights = np.tile(-prior, (len(events), 1)) + np.random.default_rng(1).normal(0, 0.5, (len(events), edges.num_edges))
    matched = matcher.decode_edges(events, weights)
    flips, observables = edges.apply(matched)
    assert matched.any() and np.array_equal(flips, events)
    assert np.array_equal(observables, matcher.decode(events, weights))


@pytest.mark.parametrize("correlated", [False, True])
def test_decode_mixed_weighs_each_edge_by_its_logit_and_answers_parities(correlated):
    """decode_mixed (a window's guided weights from one logit per edge, the answer as parities) gives
    what the dense per-shot weights and decode_edges give, shot for shot; a non-finite logit is an
    error naming the shot and the edge, and a logit index past the row is refused."""
    spec = CodeSpec(5, 5, 0.006)
    edges = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
    prior = prior_logits(spec.dem(), edges).astype(np.float32)
    matcher = WeightedMatcher(edges, -prior, conditional_weights(spec.dem(), edges) if correlated else None)
    events = spec.circuit().compile_detector_sampler(seed=13).sample(2000)
    rng = np.random.default_rng(2)
    logits = rng.normal(-6, 2, (len(events), 300)).astype(np.float32)
    logit_of = np.where(rng.random(edges.num_edges) < 0.7, rng.integers(0, 300, edges.num_edges), -1)
    logit_of[0] = 299  # the last logit of a row
    offset = (-0.6 * prior).astype(np.float32)
    offset[logit_of < 0] = -prior[logit_of < 0]
    scale = np.where(logit_of < 0, 0, -0.4).astype(np.float32)
    answers = rng.integers(0, 256, (edges.num_edges, 3), dtype=np.uint8)
    dense = np.where(logit_of < 0, offset, offset + scale * logits[:, np.maximum(logit_of, 0)])
    matched = matcher.decode_edges(events, dense)
    expected = np.zeros((len(events), 3), np.uint8)
    for shot, edge in zip(*np.nonzero(matched)):
        expected[shot] ^= answers[edge]
    assert matched.sum(axis=1).max() > 1
    mixed = matcher.decode_mixed(events, logits, logit_of, offset, scale, answers)
    assert np.array_equal(mixed, expected)
    poisoned = logits.copy()
    shot = int(np.flatnonzero(events.any(axis=1))[0])
    edge = next(e for e in range(edges.num_edges) if logit_of[e] >= 0 and events[shot, edges.detectors[e, 0]])
    poisoned[shot, logit_of[edge]] = np.nan
    with pytest.raises(NqecError, match=rf"shot {shot} .*edge {edge} is nan"):
        matcher.decode_mixed(events, poisoned, logit_of, offset, scale, answers)
    with pytest.raises(NqecError, match="expected < 299 logits per shot"):
        matcher.decode_mixed(events, logits[:, :299], logit_of, offset, scale, answers)
