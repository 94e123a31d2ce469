"""`nqec export`: a training checkpoint -> a model bundle (ONNX + manifest + weights)."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from decoder.bundle import FORMAT_VERSION, MANIFEST, ONNX_FILE, PIPELINES, Bundle
from decoder.errors import NqecError
from decoder.layout import Layout
from decoder.matching import MATCHING_MODES
from decoder.spec import CodeSpec
from training.loop import load_checkpoint

OPSET = 18


def build_network(checkpoint: dict) -> tuple[torch.nn.Module, CodeSpec]:
    """Rebuild the trained network (eval mode) and its spec from a training checkpoint."""
    from decoder.nets import make_network

    kind, config = checkpoint.get("kind"), checkpoint["config"]
    if kind == "predecoder":
        from training.train_predecoder import PreDecoderConfig as Config
    elif kind == "transformer":
        from training.train_transformer import TransformerConfig as Config
    else:
        raise NqecError(f"checkpoint kind {kind!r} is not one of predecoder, transformer")
    spec = Config(**{**config, "ps": tuple(config["ps"])}).validation_spec()
    model = make_network(kind, checkpoint["architecture"], Layout.from_circuit(spec.circuit()),
                         spec.circuit().num_observables, len(checkpoint.get("directions", ())))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), spec


def manifest_spec(experiment) -> dict:
    """The bundle's ``spec``: a CodeSpec's own; for a circuit file, the code it holds at the nominal
    ``p`` of :class:`TrainConfig` (its real noise is the manifest's ``circuit``, its file ``experiment``)."""
    if isinstance(experiment, CodeSpec):
        return experiment.to_dict()
    from training.loop import TrainConfig

    return CodeSpec(experiment.distance, experiment.rounds, TrainConfig.ps[0], experiment.basis).to_dict()


def manifest_section(checkpoint: dict) -> dict:
    """The kind-specific part of the manifest: what a pipeline needs besides the network.

    ``matching`` is the residual/fallback matching mode the thresholds were calibrated with
    (training calibrates with uncorrelated matching)."""
    if checkpoint["kind"] == "predecoder":
        return {"directions": checkpoint["directions"], "window": checkpoint["architecture"]["window"],
                "threshold": checkpoint["threshold"], "require_lit": True,
                "isolated_only": checkpoint.get("isolated_only", False), "architecture": checkpoint["architecture"],
                "matching": MATCHING_MODES[0]}
    return {"architecture": checkpoint["architecture"], "fallback_threshold": checkpoint["fallback_threshold"],
            "matching": MATCHING_MODES[0]}


def example_input(kind: str, spec: CodeSpec, section: dict) -> tuple[torch.Tensor, dict]:
    """A dummy input for tracing and the dynamic axes of the ONNX graph."""
    layout = Layout.from_circuit(spec.circuit())
    if kind == "predecoder":
        _, _, height, width = layout.shape
        return torch.zeros(2, 2 * section["window"], height, width), {0: "batch", 2: "height", 3: "width"}
    return torch.zeros(2, *layout.shape), {0: "batch"}


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the ONNX exporter's notes a user cannot act on (optional torchvision ops, pytree deprecations)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_bundle(checkpoint_path: str | Path, out: str | Path, name: str | None = None) -> Bundle:
    """Write ``model.onnx``, ``manifest.json`` and ``model.pt`` to ``out`` and return the loaded bundle."""
    checkpoint_path, out = Path(checkpoint_path), Path(out)
    if not checkpoint_path.is_file():
        raise NqecError(f"checkpoint not found: {checkpoint_path}")
    checkpoint = load_checkpoint(checkpoint_path)
    model, spec = build_network(checkpoint)
    section = manifest_section(checkpoint)
    kind = checkpoint["kind"]
    example, axes = example_input(kind, spec, section)
    out.mkdir(parents=True, exist_ok=True)
    dims = {index: torch.export.Dim.DYNAMIC for index in axes}
    with _quiet_exporter():
        program = torch.onnx.export(model, (example,), input_names=["inputs"], output_names=["logits"],
                                    dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True, verbose=False)
    program.save(str(out / ONNX_FILE))
    with torch.no_grad():
        output_shape = list(model(example).shape)
    input_shape = [axes.get(i, size) for i, size in enumerate(example.shape)]
    output_shape = [axes.get(i, size) for i, size in enumerate(output_shape)]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name or out.name,
        "kind": kind,
        "spec": manifest_spec(spec),
        **({} if isinstance(spec, CodeSpec) else {"experiment": spec.to_dict()}),
        "circuit": str(spec.circuit()),
        "layout": Layout.from_circuit(spec.circuit()).to_dict(),
        kind: section,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "onnx": {"file": ONNX_FILE, "opset": OPSET,
                 "inputs": [{"name": "inputs", "shape": input_shape, "dtype": "float32"}],
                 "outputs": [{"name": "logits", "shape": output_shape, "dtype": "float32"}]},
        "training": {**checkpoint["provenance"], "config": checkpoint["config"],
                     **{key: checkpoint[key] for key in ("syndrome_table",) if key in checkpoint}},
        "metrics": {"validation": checkpoint.get("metrics", {})},
    }
    if kind == "predecoder":
        from decoder.predecoder import PreDecoderGeometry

        edges = PreDecoderGeometry(spec, tuple(tuple(d) for d in section["directions"])).edges
        section["edges"] = {"detectors": edges.detectors.tolist(),
                            "observables": np.flatnonzero(edges.observables.any(axis=1)).tolist(),
                            "direction": edges.direction.tolist()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    torch.save({"kind": kind, "architecture": checkpoint.get("architecture"), "model": checkpoint["model"],
                **({"directions": checkpoint["directions"]} if kind == "predecoder" else {})}, out / "model.pt")
    return Bundle.load(out)


def metrics_key(model: str, decoder: str, spec: CodeSpec) -> str:
    """The manifest key of an evaluation: ``evaluate <spec>`` for the bundle's default pipeline (the
    one ``nqec models`` shows), ``evaluate <pipeline> <spec>`` for its others."""
    default = PIPELINES[Bundle.load(model).kind][0]
    return f"evaluate {spec.label()}" if decoder == default else f"evaluate {decoder} {spec.label()}"


def record_metrics(bundle_dir: str | Path, key: str, value: object) -> None:
    """Store a measured result (evaluation, benchmark) under ``metrics[key]`` in a bundle's manifest."""
    update_manifest(bundle_dir, lambda manifest: manifest.setdefault("metrics", {}).__setitem__(key, value))


def update_manifest(bundle_dir: str | Path, change) -> None:
    """Apply ``change(manifest_dict)`` to a bundle's manifest and write it back."""
    path = Path(bundle_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
