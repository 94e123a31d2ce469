"""The evaluation library: one record per decoder on shared shots, chunked decoding, the reference extra."""

import sys

import numpy as np
import pymatching
import pytest

from decoder import CodeSpec, MatchingDecoder
from decoder.bundle import Bundle
from decoder.evaluation import DecoderStats, decode_same_shots, ratio
from nqec.cli import main


def test_records_on_shared_shots_and_ratios(never_flips):
    """Records and ratios equal counts made here with PyMatching and numpy on the same 30,000 shots."""
    spec = CodeSpec(5, 5, 0.005)
    decoders = {"a": MatchingDecoder.from_spec(spec), "c": MatchingDecoder.from_spec(spec, correlations=True),
                "never": never_flips(spec)}
    stats = decode_same_shots(spec, decoders, shots=30_000, seed=4)
    events, obs = spec.circuit().compile_detector_sampler(seed=4).sample(30_000, separate_observables=True)
    plain = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events).astype(bool)
    correlated = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=True).decode_batch(
        events, enable_correlations=True).astype(bool)
    errors = {label: int(np.any(predicted != obs, axis=1).sum())
              for label, predicted in (("a", plain), ("c", correlated), ("never", np.zeros_like(obs)))}
    assert {label: record.errors for label, record in stats.items()} == errors
    assert stats["c"].disagreements == np.any(correlated != plain, axis=1).sum() > 0
    assert stats["never"].disagreements == plain.any(axis=1).sum() and stats["a"].disagreements == 0
    assert ratio(stats["c"], stats["a"]) == pytest.approx(errors["c"] / errors["a"])
    assert ratio(stats["never"], stats["a"]) == pytest.approx(errors["never"] / errors["a"])
    # Correlated matching is the stronger baseline at d=5 (measured ~0.7-0.8x).
    assert errors["c"] < 0.95 * errors["a"]
    assert stats["a"].counts["stage_matching"] == stats["never"].counts["stage_network"] == 30_000


def test_records_add_up_over_chunks():
    one = DecoderStats("m", shots=10, errors=1, seconds=0.5, disagreements=2, counts={"x": 3.0})
    two = one + one
    assert (two.shots, two.errors, two.seconds, two.disagreements, two.counts["x"]) == (20, 2, 1.0, 4, 6.0)
    assert two.ler == 0.1 and two.ler_ci[0] < 0.1 < two.ler_ci[1]
    assert ratio(one, DecoderStats("none", shots=10)) is None


@pytest.fixture(scope="module")
def shots_d5():
    spec = CodeSpec(5, 5, 0.003)
    events, _ = spec.circuit().compile_detector_sampler(seed=21).sample(10_000, separate_observables=True,
                                                                      bit_packed=True)
    return spec, events


def _pipelines(spec5):
    spec3 = Bundle.load("transformer-d3").spec
    yield "matching", spec5, MatchingDecoder.from_spec(spec5)
    yield "matching-correlated", spec5, MatchingDecoder.from_spec(spec5, correlations=True)
    yield "predecoder+matching", spec5, Bundle.load("predecoder-fpga").decoder(spec5)
    yield "predecoder+matching (correlated residual)", spec5, Bundle.load("predecoder-fpga").decoder(
        spec5, matching="correlated")
    yield "transformer", spec3, Bundle.load("transformer-d3").decoder()


def test_chunked_decode_equals_one_batch_for_every_pipeline(shots_d5):
    """10^4 shots decoded in chunks of 999 give exactly the answers of one 10^4-shot batch."""
    spec5, events5 = shots_d5
    for label, spec, decoder in _pipelines(spec5):
        events = events5 if spec == spec5 else spec.circuit().compile_detector_sampler(seed=5).sample(
            10_000, separate_observables=True, bit_packed=True)[0]
        decoder.chunk_shots = len(events)
        whole = decoder.decode_batch_with_info(events)
        decoder.chunk_shots = 999
        chunked = decoder.decode_batch_with_info(events)
        assert np.array_equal(whole.observables, chunked.observables), label
        assert np.array_equal(whole.stage, chunked.stage), label
        assert np.allclose(whole.confidence, chunked.confidence, atol=1e-6), label
        assert whole.extra.keys() == chunked.extra.keys(), label


def test_missing_reference_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tesseract_decoder", None)  # as if the extra were not installed
    assert main(["evaluate", "-d", "3", "--shots", "100", "--reference", "tesseract"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[reference]'" in err and "Traceback" not in err
