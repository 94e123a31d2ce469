"""What the transformer and reference pipelines report per shot: stage, and model failures counted."""

import sys
import types

import numpy as np
import pytest

from decoder import CodeSpec, MatchingDecoder, NqecError, Stage
from decoder.reference import TesseractReference
from decoder.transformer import TransformerPipeline

SPEC = CodeSpec(3, 3, 0.01)


@pytest.fixture(scope="module")
def events():
    return SPEC.circuit().compile_detector_sampler(seed=1).sample(200, separate_observables=True)[0]


def test_a_failing_model_falls_back_to_matching_and_is_counted(events):
    """A model call that raises: matching answers every shot and extra["network_failed"] says so
    (the fallback used to leave nothing but a log line)."""
    def failing(dense):
        raise RuntimeError("the accelerator went away")

    result = TransformerPipeline(SPEC, SPEC, failing, fallback_threshold=0.1).decode_batch_with_info(events)
    assert (result.stage == Stage.MATCHING).all() and (result.extra["network_failed"] == 1).all()
    assert np.array_equal(result.observables, MatchingDecoder.from_spec(SPEC).decode_batch(events))
    sure = lambda dense: np.full((len(dense), 1), 8.0, np.float32)
    result = TransformerPipeline(SPEC, SPEC, sure, fallback_threshold=0.1).decode_batch_with_info(events)
    assert (result.stage == Stage.NETWORK).all() and not result.extra["network_failed"].any()


def test_a_model_answering_in_the_wrong_shape_is_an_error_not_a_fallback(events):
    """Logits of the wrong shape are a broken bundle: before, the shape error was swallowed and
    matching answered silently."""
    wrong = lambda dense: np.zeros((len(dense), 3), np.float32)
    with pytest.raises(NqecError, match=r"logits of shape \[200, 3\]; expected \[200, 1\]"):
        TransformerPipeline(SPEC, SPEC, wrong, fallback_threshold=0.1).decode_batch(events)


def test_tesseract_answers_are_labelled_reference(monkeypatch, events):
    """Tesseract is neither matching nor a network: Stage.REFERENCE (was MATCHING). A stand-in
    module replaces the optional extra."""
    class FakeDecoder:
        def __init__(self, config):
            pass

        def decode_batch(self, bits):
            return np.zeros((len(bits), 1), np.uint8)

    tesseract = types.SimpleNamespace(TesseractConfig=lambda **kwargs: kwargs, TesseractDecoder=FakeDecoder)
    utils = types.SimpleNamespace(build_det_orders=lambda *args, **kwargs: [], DetOrder=types.SimpleNamespace(DetBFS=0))
    monkeypatch.setitem(sys.modules, "tesseract_decoder", types.SimpleNamespace(tesseract=tesseract, utils=utils))
    result = TesseractReference(SPEC).decode_batch_with_info(events)
    assert (result.stage == Stage.REFERENCE).all() and Stage.REFERENCE.name == "REFERENCE"
