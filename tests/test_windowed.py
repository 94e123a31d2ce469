"""Sliding-window decoding: equal to whole-experiment matching, streamable slice by slice, bounded."""

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from decoder import CodeSpec, MatchingDecoder, NqecError
from decoder.events import pack_bits
from decoder.windowed import SlidingWindowDecoder


@pytest.fixture(scope="module")
def long_shots():
    spec = CodeSpec(5, 40, 0.004)
    return spec, *spec.circuit().compile_detector_sampler(seed=2).sample(3000, separate_observables=True)


@pytest.fixture(scope="module")
def whole_experiment(long_shots):
    """Whole-experiment matching's answers on ``long_shots``, uncorrelated and correlated."""
    spec, events, _ = long_shots
    return {correlations: MatchingDecoder.from_spec(spec, correlations=correlations).decode_batch(events)
            for correlations in (False, True)}


# (commit, buffer, correlations, most shots of 3000 that may differ from whole-experiment matching).
# Measured on these shots: (5, 5) 1 and 8, (4, 3) 12 and 17, (1, 5) 6 and 30, (3, 2) 56 and 50.
WINDOWINGS = [(5, 5, False, 3), (5, 5, True, 15), (4, 3, False, 20), (4, 3, True, 25),
              (1, 5, False, 10), (1, 5, True, 45), (3, 2, False, 80), (3, 2, True, 75)]


@pytest.mark.parametrize("commit, buffer, correlations, most", WINDOWINGS)
def test_windows_decode_like_the_whole_experiment(long_shots, whole_experiment, commit, buffer, correlations, most):
    """d=5, 40 rounds, 3000 shots: windowed answers differ from whole-experiment matching (same
    mode) on at most ``most`` shots (0.1% for buffer = d, uncorrelated; each bound about 1.5x
    the measured disagreement)."""
    spec, events, _ = long_shots
    windowed = SlidingWindowDecoder(spec, commit=commit, buffer=buffer, correlations=correlations)
    differ = int(np.any(windowed.decode_batch(events, rounds=40) != whole_experiment[correlations], axis=1).sum())
    assert differ <= most, differ


def test_a_window_with_no_buffer_is_refused():
    """buffer=0 commits edges at the window's open top: 2.4-3.2x the logical errors of
    whole-experiment matching at d=3, so it is an error, not a silent setting."""
    with pytest.raises(NqecError, match="buffer >= 1 rounds .default: the distance each., got commit=3 and buffer=0"):
        SlidingWindowDecoder(CodeSpec(3, 30, 0.003), commit=3, buffer=0)


def test_short_experiments_are_one_window_and_exact():
    spec = CodeSpec(5, 7, 0.005)
    events, _ = spec.circuit().compile_detector_sampler(seed=4).sample(2000, separate_observables=True)
    windowed = SlidingWindowDecoder(spec).decode_batch(pack_bits(events), rounds=7)  # 8 slices < one window
    assert np.array_equal(windowed, MatchingDecoder.from_spec(spec).decode_batch(events))


def test_interleaved_streams_answer_like_whole_experiment_matching_in_one_window_of_memory(long_shots,
                                                                                          whole_experiment):
    """The shots split at random rows into three streams, pushed slice by slice in turn: every
    push's committed flips add up to the answer, the answers differ from whole-experiment
    matching no more than the batch's bound for (4, 3), and each stream holds one window."""
    spec, events, _ = long_shots
    decoder = SlidingWindowDecoder(spec, commit=4, buffer=3)
    sizes = decoder.slice_sizes(40)
    bounds = np.cumsum([0, *sizes])
    cuts = np.sort(np.random.default_rng(5).choice(np.arange(1, len(events)), 2, replace=False))
    rows = np.split(np.arange(len(events)), cuts)
    streams = [decoder.open(len(part)) for part in rows]
    frames = [np.zeros((len(part), 1), dtype=bool) for part in rows]
    held = []
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        for stream, part, frame in zip(streams, rows, frames):
            committed = stream.push(events[part, lo:hi])
            if committed is not None:
                frame ^= committed
            held.append(stream.held_bytes / len(part))
    answers = np.zeros_like(whole_experiment[False])
    for stream, part, frame in zip(streams, rows, frames):
        assert np.array_equal(frame, stream.frame) and frame.any()  # pushes returned every frame update
        answers[part] = stream.finish(events[part, bounds[-2]:])
        assert stream.committed_slices == 41
    assert int(np.any(answers != whole_experiment[False], axis=1).sum()) <= 20
    window_bytes = decoder.span * max(decoder.first_slice, decoder.bulk_slice) + 1  # per experiment, frame included
    assert 0 < max(held) <= window_bytes


def test_a_decoder_and_its_window_graphs_are_freed_when_dropped():
    """Window graphs were cached on the class (functools.lru_cache), keeping every decoder alive."""
    decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.001)).prepare()
    gone = weakref.ref(decoder)
    del decoder
    gc.collect()
    assert gone() is None


def test_concurrent_first_calls_build_each_window_once(monkeypatch):
    import decoder.windowed as windowed

    cuts = []

    def slow_cut(*args, **kwargs):
        cuts.append(args[1].sum())
        time.sleep(0.05)  # a wide window for a second thread to miss the cache too
        return original(*args, **kwargs)

    original = windowed._cut_dem
    monkeypatch.setattr(windowed, "_cut_dem", slow_cut)
    decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.001))
    barrier = threading.Barrier(4)

    def first_call():
        barrier.wait()
        return decoder._window(False, decoder.span, False)

    with ThreadPoolExecutor(4) as pool:
        windows = list(pool.map(lambda _: first_call(), range(4)))
    assert len(cuts) == 1 and all(window is windows[0] for window in windows)


def test_bad_slices_get_clear_errors():
    decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.001))
    stream = decoder.open(2)
    with pytest.raises(NqecError, match=r"bool \[shots, 4\]"):
        stream.push(np.zeros((2, 5), dtype=bool))
    with pytest.raises(NqecError, match="expected slice 0 of 2 experiments, got 3 rows"):
        stream.push(np.zeros((3, 4), dtype=bool))
    with pytest.raises(NqecError, match="rounds >= 1"):
        decoder.slice_sizes(0)
    with pytest.raises(NqecError, match="commit >= 1"):
        SlidingWindowDecoder(CodeSpec(3, 3, 0.001), commit=0)


def test_an_uncorrelated_twin_on_its_correlated_twins_graphs_decodes_as_on_its_own():
    spec = CodeSpec(5, 5, 0.004)
    correlated = SlidingWindowDecoder(spec, correlations=True)
    twin = SlidingWindowDecoder(spec, graphs_of=correlated)
    alone = SlidingWindowDecoder(spec)
    events, _ = CodeSpec(5, 23, 0.004).circuit().compile_detector_sampler(seed=4).sample(2000, separate_observables=True)
    shared = twin.decode_batch(events, rounds=23)
    assert np.array_equal(shared, alone.decode_batch(events, rounds=23))
    assert not np.array_equal(shared, correlated.decode_batch(events, rounds=23))  # the modes differ on these shots
    assert correlated.prepared and twin._windows == {}  # one set of graphs, held by the correlated twin
    with pytest.raises(NqecError, match="graphs_of must be a correlated"):
        SlidingWindowDecoder(spec, graphs_of=alone)
