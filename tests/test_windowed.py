"""Sliding-window decoding: equal to whole-experiment matching, streamable slice by slice, bounded."""

import numpy as np
import pytest

from decoder import CodeSpec, MatchingDecoder, NqecError
from decoder.events import pack_bits
from decoder.windowed import SlidingWindowDecoder


@pytest.fixture(scope="module")
def long_shots():
    spec = CodeSpec(5, 40, 0.004)
    return spec, *spec.circuit().compile_detector_sampler(seed=2).sample(3000, separate_observables=True)


@pytest.mark.parametrize("correlations", [False, True])
def test_windows_decode_like_the_whole_experiment(long_shots, correlations):
    """d=5, 40 rounds (7 windows): answers equal whole-experiment matching on >= 99% of shots and
    the error counts agree within 10% + 5 (measured: 99.97% equal at r=100)."""
    spec, events, obs = long_shots
    windowed = SlidingWindowDecoder(spec, correlations=correlations).decode_batch(events, rounds=40)
    whole = MatchingDecoder.from_spec(spec, correlations=correlations).decode_batch(events)
    assert np.mean(np.all(windowed == whole, axis=1)) >= 0.99
    errors = [int(np.any(p != obs, axis=1).sum()) for p in (windowed, whole)]
    assert abs(errors[0] - errors[1]) <= 0.1 * errors[1] + 5, errors


def test_short_experiments_are_one_window_and_exact():
    spec = CodeSpec(5, 7, 0.005)
    events, _ = spec.circuit().compile_detector_sampler(seed=4).sample(2000, separate_observables=True)
    windowed = SlidingWindowDecoder(spec).decode_batch(pack_bits(events), rounds=7)  # 8 slices < one window
    assert np.array_equal(windowed, MatchingDecoder.from_spec(spec).decode_batch(events))


def test_streaming_slice_by_slice_equals_batch_and_memory_stays_one_window(long_shots):
    spec, events, _ = long_shots
    decoder = SlidingWindowDecoder(spec, commit=4, buffer=3)
    sizes = decoder.slice_sizes(40)
    bounds = np.cumsum([0, *sizes])
    stream = decoder.open(len(events))
    frame = np.zeros((len(events), 1), dtype=bool)
    held = []
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        committed = stream.push(events[:, lo:hi])
        if committed is not None:
            frame ^= committed
        held.append(stream.held_bytes)
    assert np.array_equal(frame, stream.frame) and frame.any()  # pushes returned every frame update
    final = stream.finish(events[:, bounds[-2]:])
    assert np.array_equal(final, decoder.decode_batch(events, rounds=40))
    window_bytes = len(events) * decoder.span * max(decoder.first_slice, decoder.bulk_slice)
    assert 0 < max(held) <= window_bytes + frame.nbytes and stream.committed_slices == 41


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
