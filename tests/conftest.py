import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def never_flips():
    """A planted decoder with a known answer: for a spec, one that always predicts no logical flip."""
    from decoder.interface import DecodeResult, Decoder, Stage

    class NeverFlips(Decoder):
        name, chunk_shots = "never", 10_000  # several chunks per sample

        def __init__(self, spec):
            self.num_detectors, self.num_observables = spec.dem().num_detectors, spec.dem().num_observables

        def decode_chunk(self, detection_events):
            shots = len(detection_events)
            return DecodeResult(np.zeros((shots, self.num_observables), bool),
                                np.full(shots, Stage.NETWORK, np.uint8), np.zeros(shots, np.float32))

    return NeverFlips


@pytest.fixture(scope="session")
def predecoder_bundle(tmp_path_factory):
    """A real predecoder bundle from a short real training run (d=3, 40 steps): enough to beat the
    edge base rate on held-out shots (see test_predecoder_learns)."""
    from training.export import export_bundle
    from training.train_predecoder import PreDecoderConfig, train_predecoder

    out = tmp_path_factory.mktemp("predecoder")
    config = PreDecoderConfig(distance=3, ps=(0.005,), steps=40, batch=128, lr=2e-2, warmup=5, val_every=20, val_shots=2000,
                              threshold=0.9, out=str(out))
    return export_bundle(train_predecoder(config, "pytest"), out, name="test-predecoder")


@pytest.fixture(scope="session")
def transformer_bundle(tmp_path_factory):
    """A real transformer bundle from a short real training run (d=3, r=3)."""
    from training.export import export_bundle
    from training.train_transformer import TransformerConfig, train_transformer

    out = tmp_path_factory.mktemp("transformer")
    config = TransformerConfig(distance=3, ps=(0.005,), steps=30, batch=128, val_every=30, val_shots=2000,
                               fallback_threshold=0.1, out=str(out))
    return export_bundle(train_transformer(config, "pytest"), out, name="test-transformer")
