import numpy as np
import pytest

from decoder import CodeSpec, NqecError, Stage
from decoder.predecoder import PreDecoderGeometry, PreDecoderPipeline, probability_logit, round_windows


def test_round_windows_place_neighbouring_rounds_in_channels():
    dense = np.zeros((1, 2, 4, 3, 3), dtype=np.float32)
    dense[0, 1, 2, 1, 1] = 1  # Z type, round 2
    windows = round_windows(dense, 3).reshape(1, 4, 3, 2, 3, 3)  # [shot, t, k, type, y, x]
    assert windows[0, 1, 2, 1, 1, 1] == 1  # seen from round 1 as "next round"
    assert windows[0, 2, 1, 1, 1, 1] == 1  # from round 2 as "this round"
    assert windows[0, 3, 0, 1, 1, 1] == 1  # from round 3 as "previous round"
    assert windows.sum() == 3
    with pytest.raises(NqecError, match="odd number of rounds"):
        round_windows(dense, 2)


def oracle_runner(geometry, errors):
    """A perfect pre-decoder for one known batch: +20 on true edges, -20 elsewhere."""
    targets = geometry.targets(geometry.edges.labels(errors))
    return lambda windows: targets * 40 - 20


@pytest.mark.parametrize("d", [5, 9])
def test_oracle_predecoder_removes_most_events_and_beats_matching(d):
    spec = CodeSpec(d, d, 0.004)
    geometry = PreDecoderGeometry(spec)
    events, obs, errors = spec.dem().compile_sampler(seed=3).sample(4000, return_errors=True)
    pipeline = PreDecoderPipeline(spec, oracle_runner(geometry, errors), geometry.directions, window=3)
    pipeline.chunk_shots = len(events)  # the oracle knows this one batch
    result = pipeline.decode_batch_with_info(events)
    residual = result.extra["defects_after"].sum() / result.extra["defects_before"].sum()
    assert residual < 0.1
    oracle_errors = (result.observables != obs).any(axis=1).sum()
    matching_errors = (pipeline.matching.decode_batch(events) != obs).any(axis=1).sum()
    assert oracle_errors < matching_errors
    assert (result.stage == Stage.NETWORK).mean() > 0.9


def test_a_silent_network_leaves_everything_to_matching():
    spec = CodeSpec(5, 5, 0.004)
    geometry = PreDecoderGeometry(spec)
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(500, separate_observables=True)
    silent = lambda windows: np.full((len(windows), len(geometry.directions), *windows.shape[2:]), -20, np.float32)
    pipeline = PreDecoderPipeline(spec, silent, geometry.directions, window=3)
    result = pipeline.decode_batch_with_info(events)
    assert np.array_equal(result.observables, pipeline.matching.decode_batch(events))
    assert np.array_equal(result.extra["defects_after"], events.sum(axis=1))


def test_require_lit_never_adds_detection_events():
    spec = CodeSpec(5, 5, 0.004)
    geometry = PreDecoderGeometry(spec)
    events, _ = spec.circuit().compile_detector_sampler(seed=2).sample(300, separate_observables=True)
    eager = lambda windows: np.full((len(windows), len(geometry.directions), *windows.shape[2:]), 20, np.float32)
    pipeline = PreDecoderPipeline(spec, eager, geometry.directions, window=3)
    residual, _, _, _ = pipeline.predecode(events)
    assert not (residual & ~events).any()


def test_threshold_must_be_a_probability():
    spec = CodeSpec(3, 3, 0.004)
    with pytest.raises(NqecError, match=r"threshold must be in \(0, 1\)"):
        PreDecoderPipeline(spec, lambda w: w, PreDecoderGeometry(spec).directions, 3, threshold=1.5)


def test_isolated_only_applies_just_unambiguous_edges_and_keeps_matching_ler():
    """Applying every edge whose detectors have no other lit detector within two hops (the
    'lazy' rule, with an always-confident network) never changes what matching concludes
    on 20k shots at d=5, p=0.003, and removes a fifth of the detection events."""
    spec = CodeSpec(5, 5, 0.003)
    geometry = PreDecoderGeometry(spec)
    eager = lambda windows: np.full((len(windows), len(geometry.directions), *windows.shape[2:]), 20, np.float32)
    pipeline = PreDecoderPipeline(spec, eager, geometry.directions, window=3, isolated_only=True)
    events, obs = spec.circuit().compile_detector_sampler(seed=8).sample(20_000, separate_observables=True)
    result = pipeline.decode_batch_with_info(events)
    matching = pipeline.matching.decode_batch(events)
    lazy_errors = (result.observables != obs).any(axis=1).sum()
    matching_errors = (matching != obs).any(axis=1).sum()
    assert abs(int(lazy_errors) - int(matching_errors)) <= max(3, 0.1 * matching_errors)
    removed = 1 - result.extra["defects_after"].sum() / result.extra["defects_before"].sum()
    assert 0.1 < removed < 0.5


def test_confidence_is_the_least_sure_applied_edge():
    """Shots where the network applied edges report the lowest |p - 0.5| among them (was a
    constant 0.5); shots it left to matching report 0.5."""
    spec = CodeSpec(3, 3, 0.01)
    geometry = PreDecoderGeometry(spec)
    events, _ = spec.circuit().compile_detector_sampler(seed=3).sample(400, separate_observables=True)
    logit = probability_logit(0.8)  # every edge at p = 0.8: confidence 0.3 where applied
    eager = lambda windows: np.full((len(windows), len(geometry.directions), *windows.shape[2:]), logit, np.float32)
    result = PreDecoderPipeline(spec, eager, geometry.directions, window=3).decode_batch_with_info(events)
    network = result.stage == Stage.NETWORK
    assert 0 < network.sum() < len(events)
    assert np.allclose(result.confidence[network], 0.3, atol=1e-6) and (result.confidence[~network] == 0.5).all()


@pytest.mark.parametrize("spec", [CodeSpec(5, 5, 0.003), CodeSpec(3, 7, 0.003), CodeSpec(5, 5, 0.003, basis="x")])
def test_network_inputs_are_the_round_windows_of_the_dense_events(spec):
    """The one-gather input path against the layout's dense tensor cut into round windows."""
    from decoder.bundle import Bundle
    from decoder.predecoder import round_windows

    pipeline = Bundle.load("predecoder-fpga").decoder(spec, pipeline="guided-matching")
    bits = spec.circuit().compile_detector_sampler(seed=2).sample(200)
    expected = round_windows(pipeline.geometry.layout.to_dense(bits), pipeline.window)
    assert expected.any() and np.array_equal(pipeline.network_inputs(bits), expected)
