import numpy as np
import pymatching
import pytest

from decoder import CodeSpec, MatchingDecoder, NqecError, Stage
from decoder.events import pack_bits
from decoder.registry import build_decoder


@pytest.fixture(scope="module")
def sample():
    spec = CodeSpec(5, 5, 0.005)
    events, obs = spec.circuit().compile_detector_sampler(seed=7).sample(5000, separate_observables=True)
    return spec, events, obs


def test_matching_equals_direct_pymatching_on_bool_and_packed(sample):
    spec, events, obs = sample
    direct = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events)
    decoder = MatchingDecoder.from_spec(spec)
    assert np.array_equal(decoder.decode_batch(events), direct.astype(bool))
    assert np.array_equal(decoder.decode_batch(pack_bits(events)), direct.astype(bool))
    assert np.array_equal(decoder.decode_batch(events.astype(np.uint8)), direct.astype(bool))
    info = decoder.decode_batch_with_info(events)
    assert np.all(info.stage == Stage.MATCHING)
    # Matching corrects most shots at this p (a real decoder, not a constant).
    assert (info.observables != obs).any(axis=1).mean() < 0.05 < (obs.any(axis=1)).mean()


def test_empty_batch(sample):
    spec, events, _ = sample
    assert MatchingDecoder.from_spec(spec).decode_batch(events[:0]).shape == (0, 1)


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((3, 119), dtype=bool), r"bool \[shots, 120\]"),
    (np.zeros((3, 14), dtype=np.uint8), r"bit-packed uint8 \[shots, 15\]"),
    (np.zeros((3, 120), dtype=np.float32), "dtype float32"),
    (np.zeros(120, dtype=bool), "must be 2-D"),
    (np.full((2, 120), 2, dtype=np.uint8), "must be 0/1"),
    ([[0] * 120], "numpy array"),
])
def test_bad_events_get_a_clear_error(sample, bad, expected):
    spec, _, _ = sample
    with pytest.raises(NqecError, match=expected):
        MatchingDecoder.from_spec(spec).decode_batch(bad)


def test_registry_names_known_decoders():
    with pytest.raises(NqecError, match="unknown decoder 'nope'; expected one of .*matching"):
        build_decoder("nope", CodeSpec(3, 3, 0.001))


def test_correlated_mode_equals_pymatchings_own_correlated_decode():
    spec = CodeSpec(5, 5, 0.004)
    events, _ = spec.circuit().compile_detector_sampler(seed=3).sample(20_000, separate_observables=True)
    direct = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=True).decode_batch(
        events, enable_correlations=True).astype(bool)
    decoder = MatchingDecoder.from_spec(spec, correlations=True)
    assert decoder.name == "matching-correlated"
    assert np.array_equal(decoder.decode_batch(events), direct)
    assert np.array_equal(decoder.decode_batch(pack_bits(events)), direct)
    # The modes really differ on these shots (correlations change some answers).
    assert not np.array_equal(MatchingDecoder.from_spec(spec).decode_batch(events), direct)


def test_registry_builds_both_matching_modes():
    spec = CodeSpec(3, 3, 0.001)
    assert build_decoder("matching-correlated", spec).correlations
    assert build_decoder("matching", spec, matching="correlated").correlations
    assert not build_decoder("matching", spec).correlations
    with pytest.raises(NqecError, match="matching mode must be one of uncorrelated, correlated"):
        build_decoder("matching", spec, matching="sometimes")
