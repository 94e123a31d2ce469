import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from decoder import CodeSpec, NqecError, Stage
from decoder.bundle import Bundle, shipped_models
from decoder.predecoder import round_windows
from decoder.registry import build_decoder
from decoder.nets import network_from_bundle


def torch_outputs(bundle, inputs):
    model = network_from_bundle(bundle)
    with torch.inference_mode():
        return model(torch.from_numpy(inputs)).numpy()


def test_predecoder_onnx_matches_torch(predecoder_bundle):
    spec = predecoder_bundle.spec
    events, _ = spec.circuit().compile_detector_sampler(seed=4).sample(100_000, separate_observables=True)
    windows = round_windows(predecoder_bundle.layout.to_dense(events), predecoder_bundle.manifest["predecoder"]["window"])
    onnx_logits, torch_logits = predecoder_bundle.run(windows), torch_outputs(predecoder_bundle, windows)
    assert np.abs(onnx_logits - torch_logits).max() < 1e-5
    threshold = np.log(0.9 / 0.1)
    assert np.array_equal(onnx_logits > threshold, torch_logits > threshold)  # identical edge decisions, 1e5 shots


def test_predecoder_bundle_runs_at_other_distances(predecoder_bundle):
    """Fully convolutional: the d=3 model's ONNX graph has dynamic height/width."""
    spec = CodeSpec(7, 7, 0.005)
    decoder = predecoder_bundle.decoder(spec)
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(200, separate_observables=True)
    assert decoder.decode_batch(events).shape == (200, 1)


def test_transformer_onnx_matches_torch_and_falls_back(transformer_bundle):
    spec = transformer_bundle.spec
    events, _ = spec.circuit().compile_detector_sampler(seed=5).sample(20_000, separate_observables=True)
    dense = transformer_bundle.layout.to_dense(events)
    onnx_logits, torch_logits = transformer_bundle.run(dense), torch_outputs(transformer_bundle, dense)
    assert np.abs(onnx_logits - torch_logits).max() < 1e-5
    assert np.array_equal(onnx_logits > 0, torch_logits > 0)
    result = transformer_bundle.decoder().decode_batch_with_info(events)
    unsure = result.confidence < 0.1
    assert np.array_equal(result.stage == Stage.MATCHING, unsure)


def test_loading_and_decoding_never_imports_torch(predecoder_bundle, transformer_bundle):
    code = f"""
import sys
from decoder.bundle import Bundle
for path in {[str(predecoder_bundle.path), str(transformer_bundle.path)]!r}:
    bundle = Bundle.load(path)
    spec = bundle.spec
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(50, separate_observables=True)
    assert bundle.decoder().decode_batch(events).shape == (50, 1)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def broken_copy(bundle, tmp_path, edit):
    target = tmp_path / "broken"
    shutil.copytree(bundle.path, target)
    edit(target)
    return target


def edit_manifest(change):
    def edit(path):
        manifest = json.loads((path / "manifest.json").read_text())
        change(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))
    return edit


@pytest.mark.parametrize("edit, expected", [
    (edit_manifest(lambda m: m.update(format_version=99)), "unknown bundle format version 99"),
    (lambda p: (p / "model.onnx").unlink(), "missing its ONNX file model.onnx"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
    (edit_manifest(lambda m: m.update(kind="oracle")), "unknown model kind 'oracle'"),
    (edit_manifest(lambda m: m.update(circuit=str(CodeSpec(5, 5, 0.005).circuit()))), "layout does not match its circuit"),
    (edit_manifest(lambda m: m["predecoder"].update(window=5)), "needs 10 input channels, ONNX has 6"),
    (edit_manifest(lambda m: m["predecoder"].pop("threshold")), r"predecoder section lacks \['threshold'\]"),
])
def test_broken_bundles_get_clear_errors(predecoder_bundle, tmp_path, edit, expected):
    with pytest.raises(NqecError, match=expected):
        Bundle.load(broken_copy(predecoder_bundle, tmp_path, edit))


def test_transformer_on_another_spec_is_refused_by_default(transformer_bundle):
    with pytest.raises(NqecError, match="trained for d=3 r=3"):
        transformer_bundle.decoder(CodeSpec(5, 5, 0.003))
    pipeline = transformer_bundle.decoder(CodeSpec(5, 5, 0.003), out_of_range="fallback")
    events, _ = CodeSpec(5, 5, 0.003).circuit().compile_detector_sampler(seed=1).sample(100, separate_observables=True)
    assert (pipeline.decode_batch_with_info(events).stage == Stage.MATCHING).all()


def test_unknown_model_names_list_the_shipped_ones():
    with pytest.raises(NqecError, match="unknown model 'nonexistent-model'"):
        build_decoder("predecoder+matching", CodeSpec(5, 5, 0.003), "nonexistent-model")


def test_decoder_kind_must_match_model_kind(transformer_bundle):
    with pytest.raises(NqecError, match="is a transformer model; decoder 'predecoder\\+matching' needs a predecoder"):
        build_decoder("predecoder+matching", CodeSpec(3, 3, 0.003), str(transformer_bundle.path))


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_bundles_load_and_decode(name):
    bundle = Bundle.load(name)
    spec = bundle.spec
    events, _ = spec.circuit().compile_detector_sampler(seed=1).sample(100, separate_observables=True)
    assert bundle.decoder().decode_batch(events).shape == (100, spec.circuit().num_observables)
    assert bundle.manifest["training"]["machine"]


def test_bench_inference_reports_both_runtimes_and_parity(predecoder_bundle, tmp_path):
    from nqec.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "inference", "--model", str(predecoder_bundle.path), "--seconds", "0.2",
                 "--parity-shots", "2000", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for runtime in ("onnxruntime", "torch"):
        row = result["runtimes"][runtime]
        assert row["batch1_p99_ms"] >= row["batch1_p50_ms"] > 0 and row["batch1024_shots_per_s"] > 0
    assert result["parity"]["identical_decisions"] and result["parity"]["max_abs_diff"] < 1e-5


def test_quantized_bundle_decides_like_its_parent(tmp_path):
    """An 8-bit copy of predecoder-fpga: same interface, and on fresh Stim windows at d=5 and d=7
    (>= 2000 edges the float network calls likely, p > 0.5, of ~1e5 slots) it finds >= 93% of the
    float network's likely edges (measured ~96%) and >= 97% of its own are the float's (~99.9%).
    Plain slot agreement would not do: a network that never calls an edge agrees on ~99.7%."""
    from training.quantize import quantize_bundle

    parent = Bundle.load("predecoder-fpga")
    int8 = quantize_bundle(parent, tmp_path / "fpga-int8", shots=500, seed=2, command="test")
    assert int8.name == "fpga-int8" and int8.manifest["quantization"]["parent"] == "predecoder-fpga"
    assert int8.manifest["metrics"] == {} and not (int8.path / "model.pt").exists()
    for d in (5, 7):
        inputs, _ = parent.stim_inputs(300, seed=9, spec=CodeSpec(d, d, 0.003))
        ours, theirs = int8.run(inputs) > 0, parent.run(inputs) > 0
        both = np.sum(ours & theirs)
        assert theirs.sum() >= 2000 and both >= 0.93 * theirs.sum() and both >= 0.97 * ours.sum(), (
            d, theirs.sum(), ours.sum(), both)
    with pytest.raises(NqecError, match="--out must differ from the model's own folder"):
        quantize_bundle(int8, int8.path)


def test_large_batches_split_over_the_cores_give_the_rows_in_order():
    from decoder.bundle import PARALLEL_ROWS

    bundle = Bundle.load("predecoder-fpga")
    inputs, _ = bundle.stim_inputs(400, seed=5)
    assert len(inputs) > PARALLEL_ROWS
    whole = bundle.run(inputs)
    pieces = np.concatenate([bundle.run(inputs[i: i + 100]) for i in range(0, len(inputs), 100)])
    np.testing.assert_allclose(whole, pieces, atol=1e-5)


def test_a_transformer_refuses_another_experiment_in_one_line(tmp_path):
    """A circuit that is not its code (a repetition code: no basis, no distance) got an AttributeError."""
    import stim

    from decoder.experiment import CircuitSpec

    path = tmp_path / "repetition.stim"
    path.write_text(str(stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
                                               before_round_data_depolarization=0.01)))
    with pytest.raises(NqecError, match="was trained for d=3 r=3 .* got repetition.stim"):
        Bundle.load("transformer-d3").decoder(CircuitSpec.from_file(path))
