"""The compiled window loop (decoder/window_loop.cc) against its oracle, the Python loop matching each
window with pymatching.Matching: the same answers bit for bit, in both matching modes, however the
slices arrive."""

import dataclasses

import numpy as np
import pymatching
import pytest
import stim

from decoder import CodeSpec, NqecError
from decoder.events import pack_bits
from decoder.windowed import PyMatchingWindows, SlidingWindowDecoder, window_matching


def oracle(decoder: SlidingWindowDecoder, events: np.ndarray, rounds: int) -> np.ndarray:
    """The Python loop, each window matched by pymatching.Matching, slice by slice."""
    decoder.prepare()
    stream = PyMatchingWindows(decoder, len(events))
    assert stream._stream is None  # the Python loop
    bounds = np.cumsum([0, *decoder.slice_sizes(rounds)])
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        stream.push(events[:, lo:hi])
    return stream.finish(events[:, bounds[-2]:])


def shots(spec: CodeSpec, rounds: int, count: int, seed: int) -> np.ndarray:
    return dataclasses.replace(spec, rounds=rounds).circuit().compile_detector_sampler(seed=seed).sample(count)


# (distance, commit, buffer, rounds): shorter than a window, one window, several, not a multiple of commit
CASES = [(3, 3, 3, 2), (3, 3, 3, 5), (3, 3, 3, 17), (3, 2, 1, 10), (5, 5, 5, 4), (5, 5, 5, 9), (5, 5, 5, 23),
         (5, 4, 3, 31)]


@pytest.mark.parametrize("correlations", [False, True])
@pytest.mark.parametrize("distance, commit, buffer, rounds", CASES)
def test_the_compiled_loop_answers_as_the_pymatching_loop(distance, commit, buffer, rounds, correlations):
    spec = CodeSpec(distance, distance, 0.006)
    decoder = SlidingWindowDecoder(spec, commit=commit, buffer=buffer, correlations=correlations)
    events = shots(spec, rounds, 400, seed=rounds)
    compiled = decoder.decode_batch(events, rounds=rounds)
    expected = oracle(decoder, events, rounds)
    assert compiled.any() and np.array_equal(compiled, expected)


@pytest.mark.parametrize("correlations", [False, True])
def test_windows_with_more_than_64_observables_answer_as_the_pymatching_loop(correlations):
    """d=9: a window's answer has 1 + 80 observables (its logical flip and each carried detector's), so
    PyMatching answers through its search graph, not a 64-bit mask."""
    spec = CodeSpec(9, 9, 0.008)
    decoder = SlidingWindowDecoder(spec, commit=3, buffer=3, correlations=correlations)
    events = shots(spec, 14, 200, seed=5)
    compiled = decoder.decode_batch(events, rounds=14)
    assert decoder._window(False, decoder.span, False).matcher.num_observables == 81
    assert compiled.any() and np.array_equal(compiled, oracle(decoder, events, 14))


def test_window_graphs_match_as_pymatching_does():
    """Every window's compiled graph against pymatching.Matching on the same DEM, random syndromes:
    the uncorrelated graph, and the correlated one decoded both ways (an uncorrelated twin reads it)."""
    decoder = SlidingWindowDecoder(CodeSpec(5, 5, 0.004))
    for key, graph in decoder.cut_windows().items():
        for correlations in (False, True):
            matcher = window_matching(graph.dem, graph.carried, correlations)
            reference = pymatching.Matching.from_detector_error_model(stim.DetectorErrorModel(graph.dem),
                                                                      enable_correlations=correlations)
            syndromes = np.random.default_rng(len(key)).random((300, matcher.num_detectors)) < 0.04
            syndromes[:, -1] = False  # the window's open top is never a detection event
            for mode in {False, correlations}:
                expected = reference.decode_batch(syndromes, enable_correlations=mode).astype(bool)
                assert np.array_equal(matcher.decode_batch(syndromes.view(np.uint8), mode), expected), (key, mode)


@pytest.mark.parametrize("correlations", [False, True])
def test_slices_pushed_in_any_messages_answer_as_one_by_one(correlations):
    """Pushes of random numbers of slices (0 to 13, bit-packed or not): the returned updates add up to
    the frame, and the answers, committed slices and frame updates equal slice-by-slice pushes'."""
    spec = CodeSpec(5, 5, 0.006)
    decoder = SlidingWindowDecoder(spec, commit=4, buffer=3, correlations=correlations)
    rounds = 61
    events = shots(spec, rounds, 64, seed=9)
    bounds = np.cumsum([0, *decoder.slice_sizes(rounds)])
    one = decoder.open(len(events))
    updates = [one.push(events[:, lo:hi]) for lo, hi in zip(bounds[:-2], bounds[1:-1])]
    rng = np.random.default_rng(3)
    many, at, frame = decoder.open(len(events)), 0, np.zeros((len(events), 1), dtype=bool)
    while at < rounds:
        count = min(int(rng.integers(0, 14)), rounds - at)
        part = events[:, bounds[at]:bounds[at + count]]
        update = many.push_slices(pack_bits(part) if count % 2 else part, count)
        done = [u for u in updates[at:at + count] if u is not None]
        assert (update is None) == (not done)
        if done:
            assert np.array_equal(update, np.bitwise_xor.reduce(done))
            frame ^= update
        at += count
        assert np.array_equal(frame, many.frame)
    assert many.next_slice == one.next_slice == rounds and many.committed_slices == one.committed_slices
    answer = many.finish(events[:, bounds[-2]:])
    assert np.array_equal(answer, one.finish(events[:, bounds[-2]:]))
    assert np.array_equal(answer, oracle(decoder, events, rounds))


def test_bad_pushes_name_what_was_expected():
    decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.001))
    stream = decoder.open(2)
    with pytest.raises(NqecError, match=r"bool \[shots, 12\] or bit-packed uint8 \[shots, 2\]"):
        stream.push_slices(np.zeros((2, 13), dtype=bool), 2)  # slice 0 (4 detectors) and slice 1 (8)
    with pytest.raises(NqecError, match="expected slices 0..2 of 2 experiments, got 3 rows"):
        stream.push_slices(np.zeros((3, 20), dtype=bool), 3)
    stream.push_slices(np.zeros((2, 12), dtype=bool), 2)
    with pytest.raises(NqecError, match=r"bool \[shots, 8\]"):
        stream.push(np.zeros((2, 4), dtype=bool))
    stream.finish(np.zeros((2, 4), dtype=bool))
    with pytest.raises(NqecError, match="finished"):
        stream.push_slices(np.zeros((2, 8), dtype=bool), 1)


def test_an_open_experiment_holds_one_window():
    decoder = SlidingWindowDecoder(CodeSpec(5, 5, 0.003))
    stream = decoder.open(3)
    events = shots(CodeSpec(5, 5, 0.003), 500, 3, seed=1)
    stream.push_slices(events[:, :-decoder.final_slice], 500)
    window = decoder.span * max(decoder.first_slice, decoder.bulk_slice)
    assert stream.held_bytes == 3 * (window + 1) and stream.committed_slices == 495


def test_a_lookahead_holds_windows_back_without_changing_them():
    class Late(SlidingWindowDecoder):
        lookahead = 2

    spec = CodeSpec(3, 3, 0.006)
    events = shots(spec, 20, 300, seed=2)
    late = Late(spec)
    stream = late.open(len(events))
    assert stream.push_slices(events[:, :4 + 5 * 8], 6) is None  # a window's 6 slices, not yet its lookahead
    answer = late.decode_batch(events, rounds=20)
    assert np.array_equal(answer, SlidingWindowDecoder(spec).decode_batch(events, rounds=20))
    assert np.array_equal(answer, oracle(late, events, 20))
