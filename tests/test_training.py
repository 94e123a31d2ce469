import json
import os
import subprocess
import sys

import numpy as np
import pymatching
import pytest
import scipy.stats
import torch

from training.loop import cosine_lr, load_checkpoint
from training.train_transformer import TransformerConfig, train_transformer


def test_cosine_schedule_warms_up_then_decays():
    lrs = [cosine_lr(step, 100, 1.0, 10) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] > lrs[50] > lrs[99] >= 0.1


def test_training_records_provenance_and_validation(predecoder_bundle):
    manifest = predecoder_bundle.manifest
    training = manifest["training"]
    assert training["steps"] == 40 and training["samples"] == 40 * 128
    assert training["seed"] == 0 and training["command"] == "pytest" and training["wall_seconds"] > 0
    validation = manifest["metrics"]["validation"]
    assert 0 <= validation["edge_recall"] <= 1 and validation["val_ler"] >= 0
    lines = [json.loads(line) for line in (predecoder_bundle.path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "val_ler" in line] == [20, 40]


def held_out_edge_logits(bundle, shots, seed):
    """The network's edge logits on fresh DEM samples and whether each edge really fired, both flat."""
    pipeline = bundle.decoder(pipeline="guided-matching")
    events, _, errors = bundle.spec.dem().compile_sampler(seed=seed).sample(shots, return_errors=True)
    fired = pipeline.geometry.edges.labels(errors)[:, pipeline.geometry.predictable]
    return pipeline.network_logits(events).astype(np.float64).ravel(), fired.ravel()


def test_predecoder_learns(predecoder_bundle):
    """On 5000 held-out shots (~5000 fired of ~4e5 edge slots) the network beats the best constant:
    its BCE is < 0.85x the binary entropy of the edge base rate (what a constant logit at the base
    rate scores; measured ~0.7x) and it ranks fired edges above unfired ones (AUC > 0.85, measured
    ~0.94; a constant scores 0.5)."""
    logits, fired = held_out_edge_logits(predecoder_bundle, 5000, seed=77)
    rate = fired.mean()
    base_rate_loss = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    loss = np.mean(np.logaddexp(0, logits) - fired * logits)
    assert fired.sum() > 3000 and loss < 0.85 * base_rate_loss, (loss, base_rate_loss)
    ranks = scipy.stats.rankdata(logits)
    positives, negatives = fired.sum(), (~fired).sum()
    auc = (ranks[fired].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    assert auc > 0.85, auc


def test_resume_continues_from_the_checkpoint(tmp_path):
    config = TransformerConfig(distance=3, ps=(0.01,), steps=6, batch=32, val_every=3, val_shots=200,
                               fallback_threshold=0.0, out=str(tmp_path))
    train_transformer(config)
    first = load_checkpoint(tmp_path / "checkpoint.pt")
    config.steps, config.resume = 10, True
    train_transformer(config)
    resumed = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (first["step"], resumed["step"]) == (6, 10)
    assert resumed["provenance"]["samples"] == 10 * 32
    assert resumed["provenance"]["wall_seconds"] > first["provenance"]["wall_seconds"]
    changed = [not torch.equal(first["model"][k], resumed["model"][k]) for k in first["model"]]
    assert any(changed)


def test_fine_tuning_starts_from_the_weights_and_keeps_the_lineage(tmp_path):
    from decoder.bundle import lineage_totals

    config = TransformerConfig(distance=3, ps=(0.01,), steps=4, batch=32, val_every=4, val_shots=200,
                               fallback_threshold=0.0, out=str(tmp_path / "parent"))
    parent = load_checkpoint(train_transformer(config))
    config.steps, config.lr, config.out = 1, 1e-12, str(tmp_path / "child")
    config.init_from = str(tmp_path / "parent" / "checkpoint.pt")
    child = load_checkpoint(train_transformer(config))
    assert child["step"] == 1  # a fresh schedule, not a resume
    assert all(torch.allclose(parent["model"][k], child["model"][k], atol=1e-6) for k in parent["model"])
    totals = lineage_totals(child["provenance"])
    assert totals["samples"] == 4 * 32 + 1 * 32 and len(totals["machines"]) == 2


def test_background_workers_draw_the_same_stream_as_the_training_process():
    import functools

    from decoder.spec import CodeSpec
    from training.data import CircuitStream, sharded_batches

    stream = functools.partial(CircuitStream, CodeSpec(3, 3, 0.01), 64, 7)
    here, background = sharded_batches(stream, 0, 1, workers=0), sharded_batches(stream, 0, 1, workers=1)
    for _ in range(3):
        (events, flips), (events_bg, flips_bg) = next(here), next(background)
        assert (events == events_bg.numpy()).all() and (flips == flips_bg.numpy()).all()
    two = sharded_batches(stream, 0, 1, workers=2)
    first, second = next(two)[0].numpy(), next(two)[0].numpy()
    assert not (first == second).all()  # two workers, two independent shards


def test_fallback_threshold_is_calibrated_when_not_given(tmp_path):
    config = TransformerConfig(distance=3, ps=(0.01,), steps=4, batch=32, val_every=4, val_shots=500, out=str(tmp_path))
    checkpoint = load_checkpoint(train_transformer(config))
    table = checkpoint["fallback_calibration"]
    assert [row["fallback_threshold"] for row in table] == [0.0, 0.05, 0.1, 0.2, 0.3, 0.4]
    best = min(table, key=lambda row: (row["ler"], row["fallback_fraction"]))
    assert checkpoint["fallback_threshold"] == best["fallback_threshold"]


def test_torchrun_ddp_on_two_cpu_processes(tmp_path):
    """The same entry point under torchrun: 2 processes, gloo backend, data sharded by rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "nqec", "train", "transformer", "-d", "3", "-p", "0.01", "--steps", "4", "--batch", "16",
               "--val-every", "4", "--val-shots", "200", "--threshold", "0", "--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["provenance"]["world_size"] == 2
    assert checkpoint["provenance"]["samples"] == 4 * 16 * 2
    assert (tmp_path / "model.onnx").is_file()


def test_transformer_trains_on_a_syndrome_table(tmp_path):
    """--table-shots: the run counts the table once, trains on flip rates, and the bundle records it."""
    from training.export import export_bundle

    config = TransformerConfig(distance=3, ps=(0.003, 0.01), steps=60, batch=256, warmup=5, val_every=60,
                               val_shots=500, fallback_threshold=0.0, table_shots=50_000, out=str(tmp_path))
    checkpoint = load_checkpoint(train_transformer(config))
    table = checkpoint["syndrome_table"]
    assert table["shots"] == 50_000 and 100 < table["distinct_syndromes"] < 50_000
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < 0.5  # weighted BCE: 0.69 at initialization
    manifest = export_bundle(tmp_path / "checkpoint.pt", tmp_path / "bundle").manifest
    assert manifest["training"]["syndrome_table"] == table
    assert manifest["training"]["config"]["table_shots"] == 50_000


def test_export_prints_only_its_own_line(predecoder_bundle, tmp_path, capfd):
    """The ONNX exporter's notes (optional torchvision ops, pytree deprecations) stay out of the output."""
    from nqec.cli import main

    capfd.readouterr()
    assert main(["export", str(predecoder_bundle.path / "checkpoint.pt"), "--out", str(tmp_path / "bundle")]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == f"wrote bundle {tmp_path / 'bundle'}" and err == ""


def test_guided_calibration_rows_match_independent_decodes():
    """The calibration table's mix-0 rows are plain and correlated matching: on the same 3000 shots their
    error counts equal PyMatching's own (correlated: within 3 shots, 0.1%, the rounding ties of our own
    correlated pass; here 44 errors, uncorrelated 72); the chosen (mode, mix, temperature), decoded again by a
    freshly built guided pipeline, makes the table's fewest errors."""
    from decoder.bundle import Bundle
    from decoder.guided import GuidedMatchingPipeline
    from decoder.spec import CodeSpec
    from training.calibrate import calibrate_guided

    spec, bundle = CodeSpec(5, 5, 0.006), Bundle.load("predecoder-fpga")
    result = calibrate_guided(bundle, spec, shots=3000, seed=9)
    events, obs = spec.circuit().compile_detector_sampler(seed=9).sample(3000, separate_observables=True)
    rows = {(row["matching"], row["mix"], row["temperature"]): row["errors"] for row in result["table"]}
    for mode, correlations, tolerance in (("uncorrelated", False, 0), ("correlated", True, 3)):
        matching = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=correlations)
        direct = np.any(matching.decode_batch(events, enable_correlations=correlations) != obs, axis=1).sum()
        assert abs(rows[(mode, 0.0, 1.0)] - direct) <= tolerance, (mode, rows[(mode, 0.0, 1.0)], direct)
    assert result["matching_errors"] == rows[("uncorrelated", 0.0, 1.0)]
    section = bundle.manifest["predecoder"]
    chosen = GuidedMatchingPipeline(spec, bundle.run, tuple(tuple(d) for d in section["directions"]), section["window"],
                                    mix=result["mix"], temperature=result["temperature"],
                                    correlations=result["matching"] == "correlated")
    assert np.any(chosen.decode_batch(events) != obs, axis=1).sum() == min(rows.values())


@pytest.fixture
def device_circuit(tmp_path):
    """A d=3 device-noise circuit file from ``nqec circuit --noise-file example``."""
    from nqec.cli import main

    path = tmp_path / "device-d3.stim"
    assert main(["circuit", "-d", "3", "-r", "3", "--noise-file", "example", "--out", str(path)]) == 0
    return path


def test_fine_tuning_on_a_circuit_file_records_it_and_decodes_it(device_circuit, tmp_path, capsys):
    """``train predecoder --circuit --init-from BUNDLE``: the shipped weights, size and edge directions
    are the start (one step at lr 1e-12 keeps them), the manifest records the file (path, sha256, text)
    and the shipped lineage, and the new bundle decodes that circuit."""
    import hashlib

    from decoder.bundle import Bundle
    from decoder.experiment import CircuitSpec
    from nqec.cli import main

    out = tmp_path / "tuned"
    assert main(["train", "predecoder", "--circuit", str(device_circuit), "--init-from", "predecoder-d5",
                 "--steps", "1", "--batch", "8", "--lr", "1e-12", "--val-every", "1", "--val-shots", "100",
                 "--threshold", "0.9", "--out", str(out)]) == 0
    bundle, parent = Bundle.load(out), Bundle.load("predecoder-d5")
    text = device_circuit.read_text()
    assert bundle.manifest["experiment"]["circuit_file"] == str(device_circuit)
    assert bundle.manifest["experiment"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert bundle.manifest["circuit"] == str(CircuitSpec.from_file(device_circuit).circuit())
    assert bundle.manifest["training"]["parent"]["bundle"] == "predecoder-d5"
    assert bundle.manifest["training"]["config"]["size"] == "accurate"  # the start's size, not --size's default
    assert bundle.manifest["predecoder"]["directions"] == parent.manifest["predecoder"]["directions"]
    spec = CircuitSpec.from_file(device_circuit)
    inputs, _ = bundle.stim_inputs(20, 1, spec)
    assert np.allclose(bundle.run(inputs), parent.run(inputs), atol=1e-4)  # started from the shipped weights
    events = spec.circuit().compile_detector_sampler(seed=2).sample(50)
    assert bundle.decoder(spec, pipeline="guided-matching").decode_batch(events).shape == (50, 1)


def test_calibrate_and_quantize_take_a_circuit_file(device_circuit, tmp_path, capsys):
    from decoder.bundle import Bundle
    from nqec.cli import main

    assert main(["calibrate", "--circuit", str(device_circuit), "--model", "predecoder-fpga", "--shots", "300",
                 "--json", str(tmp_path / "c.json")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["spec"]["circuit_file"] == str(device_circuit) and len(result["table"]) == 50
    assert main(["quantize", "--model", "predecoder-fpga", "--circuit", str(device_circuit), "--shots", "20",
                 "--out", str(tmp_path / "int8")]) == 0
    calibration = Bundle.load(tmp_path / "int8").manifest["quantization"]["calibration"]
    assert calibration["spec"]["circuit_file"] == str(device_circuit)
    capsys.readouterr()
    assert main(["train", "predecoder", "--circuit", str(device_circuit), "-d", "5"]) == 2
    assert capsys.readouterr().err.strip() == "nqec train: error: --circuit is the whole experiment; drop -d"
