"""The compiled weighted matcher under misuse: shared threads, bad weights, bad CSR, impossible shots."""

import subprocess
import sys
import textwrap

import numpy as np
import pymatching
import pytest

from decoder import CodeSpec, NqecError
from decoder.guided import WeightedMatcher, conditional_weights, prior_logits
from decoder.predecoder import PreDecoderGeometry


@pytest.fixture(scope="module")
def d3():
    spec = CodeSpec(3, 3, 0.005)
    edges = PreDecoderGeometry(spec).edges
    return spec, edges, prior_logits(spec.dem(), edges)


def raw(edges, weights, indptr=(), indices=(), conditional=()):
    """The C++ matcher itself, without the Python wrapper's checks and clipping."""
    from decoder._weighted_matching import WeightedMatching

    masks = (edges.observables.astype(np.uint64) << np.arange(edges.observables.shape[1], dtype=np.uint64)).sum(1)
    return WeightedMatching(edges.num_detectors, edges.detectors, masks.astype(np.uint64), weights,
                            np.array(indptr, np.int64), np.array(indices, np.int64), np.array(conditional))


def test_two_threads_on_one_matcher_give_the_single_thread_answers():
    """Run in a subprocess: before the matcher had a lock, two threads sharing it crashed the process."""
    script = textwrap.dedent("""
        import threading
        import numpy as np
        from decoder import CodeSpec
        from decoder.guided import WeightedMatcher, prior_logits
        from decoder.predecoder import PreDecoderGeometry
        spec = CodeSpec(5, 5, 0.01)
        edges = PreDecoderGeometry(spec).edges
        prior = prior_logits(spec.dem(), edges)
        matcher = WeightedMatcher(edges, -prior)
        events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(2000, separate_observables=True)
        weights = np.random.default_rng(0).uniform(0, 20, (len(events), edges.num_edges))
        expected = matcher.decode(events, weights)
        wrong = []
        def work():
            for _ in range(4):
                wrong.append(int(np.sum(matcher.decode(events, weights) != expected)))
        threads = [threading.Thread(target=work) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("wrong", sum(wrong), len(wrong))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["wrong", "0", "8"]


def test_nan_and_infinite_weights_are_refused(d3):
    spec, edges, prior = d3
    matcher = WeightedMatcher(edges, -prior)
    events = np.zeros((3, edges.num_detectors), bool)
    for bad in (np.nan, np.inf, -np.inf):
        weights = np.tile(-prior, (3, 1))
        weights[1, 7] = bad
        with pytest.raises(NqecError, match=rf"finite log-odds weights; shot 1, edge 7 is {bad}"):
            matcher.decode(events, weights)
    with pytest.raises(NqecError, match="finite log-odds weights; edge 2 is nan"):
        WeightedMatcher(edges, np.where(np.arange(edges.num_edges) == 2, np.nan, -prior))


def test_the_compiled_matcher_checks_weight_ranges_itself(d3):
    """Weights past ~4,096 overflowed the matcher's 32-bit integer weights; only the Python side clipped."""
    spec, edges, prior = d3
    too_heavy = np.where(np.arange(edges.num_edges) == 3, 5000.0, -prior)
    with pytest.raises(ValueError, match=r"weight of edge 3 is 5000.0+; expected a finite log-odds weight in \[0, 32\]"):
        raw(edges, too_heavy)
    matcher = raw(edges, -prior)
    events = np.zeros((2, edges.num_detectors), np.uint8)
    events[1, edges.detectors[3, 0]] = 1
    weights = np.tile(-prior, (2, 1)).astype(np.float32)
    weights[1, 3] = 5000
    with pytest.raises(ValueError, match="shot 1 .1 detection events.: weight of edge 3 is 5000"):
        matcher.decode_batch(events, weights)
    weights[1, 3] = np.nan
    with pytest.raises(ValueError, match="shot 1 .1 detection events.: weight of edge 3 is nan"):
        matcher.decode_batch(events, weights)


def test_correlation_csr_arrays_are_checked(d3):
    spec, edges, prior = d3
    csr = conditional_weights(spec.dem(), edges)
    raw(edges, -prior, csr.indptr, csr.indices, csr.data)  # the real one is accepted
    too_long = csr.indptr.copy()
    too_long[-1] += 5  # would read past the end of indices
    with pytest.raises(ValueError, match="indptr\\[-1\\] = len\\(indices\\)"):
        raw(edges, -prior, too_long, csr.indices, csr.data)
    decreasing = csr.indptr.copy()
    decreasing[5] = decreasing[6] + 1
    with pytest.raises(ValueError, match="non-decreasing CSR indptr"):
        raw(edges, -prior, decreasing, csr.indices, csr.data)
    with pytest.raises(ValueError, match="len\\(weights\\)"):
        raw(edges, -prior, csr.indptr, csr.indices, csr.data[:-1])
    with pytest.raises(ValueError, match="conditional weight 0 is nan"):
        raw(edges, -prior, csr.indptr, csr.indices, np.where(np.arange(len(csr.data)) == 0, np.nan, csr.data))


def test_a_failed_shot_leaves_no_weights_behind():
    """A shot that fails half-way through setting its weights (all 0, then a NaN) puts them back:
    the next shot matches exactly like PyMatching (before, it was matched on the failed shot's
    weights: 9 of these 200 shots differ on a graph left at weight 0)."""
    spec = CodeSpec(5, 5, 0.005)
    edges = PreDecoderGeometry(spec).edges
    prior = prior_logits(spec.dem(), edges)
    matcher = raw(edges, -prior)
    everything = np.ones((1, edges.num_detectors), np.uint8)  # touches every edge before the bad one
    weights = np.zeros((1, edges.num_edges), np.float32)
    first_seen = np.where(edges.detectors[:, 1] < 0, edges.detectors[:, 0], edges.detectors.min(axis=1))
    last = int(np.lexsort((np.arange(edges.num_edges), first_seen))[-1])  # the edge whose weight is set last
    weights[0, last] = np.nan
    events, _ = spec.circuit().compile_detector_sampler(seed=4).sample(3000, separate_observables=True)
    events = events[events.any(axis=1)][:200].astype(np.uint8)
    direct = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events)[:, 0]
    prior_weights = (-prior).astype(np.float32)[None]
    answers = []
    for shot in events:
        with pytest.raises(ValueError, match=f"weight of edge {last} is nan"):
            matcher.decode_batch(everything, weights)
        answers.append(matcher.decode_batch(shot[None], prior_weights)[0])
    assert np.array_equal(answers, direct)


def test_a_shot_without_a_perfect_matching_is_named_and_the_matcher_stays_usable():
    """Two detectors, one edge, no boundary: an odd shot has no perfect matching. The batch fails
    with the index of that shot; the matcher then decodes as before."""
    from decoder._weighted_matching import WeightedMatching

    matcher = WeightedMatching(2, np.array([[0, 1]]), np.array([1], np.uint64), np.array([2.0]),
                               np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    events = np.array([[1, 1], [0, 0], [0, 1]], np.uint8)
    with pytest.raises(ValueError, match="shot 2 .1 detection events.: no perfect matching"):
        matcher.decode_batch(events, np.full((3, 1), 2.0, np.float32))
    assert matcher.decode_batch(events[:2], np.full((2, 1), 2.0, np.float32)).tolist() == [1, 0]
