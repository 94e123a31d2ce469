"""Train the CNN pre-decoder on DEM samples; runs single-process or under torchrun (DDP).

Labels are the matching-graph edges flipped by the fired DEM mechanisms; the loss is a
class-weighted binary cross-entropy over every (round, direction, cell) that has an edge.
The experiment is a code spec (``-d/-r/-p``) or the user's circuit file (``circuit``); a
fine-tune (``init_from``) starts from a checkpoint or a bundle and keeps its size and directions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from decoder.bundle import MANIFEST, resolve_model
from decoder.errors import NqecError
from decoder.experiment import CircuitSpec
from decoder.nets import PREDECODER_SIZES, PreDecoderCNN
from decoder.predecoder import PreDecoderGeometry, PreDecoderPipeline, probability_logit, round_windows
from training.data import DemStream, Shard, sharded_batches
from training.evaluate import evaluate
from training.loop import TrainConfig, TrainingTask, load_checkpoint, pick_size, save_checkpoint, train

CANDIDATE_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclasses.dataclass
class PreDecoderConfig(TrainConfig):
    size: str = "fpga"
    pos_weight: float = 1.0
    threshold: float | None = None  # None: calibrate on held-out shots after training
    out: str = "runs/predecoder"
    circuit: str | None = None  # a Stim circuit file: the experiment, instead of distance/rounds/ps/...

    def specs(self):
        """The circuit file's experiment if given, else one CodeSpec per training p."""
        if not self.circuit:
            return super().specs()
        spec = CircuitSpec.from_file(self.circuit)
        if spec.surface_code_problem:
            raise NqecError(f"{self.circuit}: the pre-decoder trains on rotated surface-code memory circuits; "
                            f"this one is not: {spec.surface_code_problem}")
        return [spec]

    def validation_spec(self):
        return self.specs()[0] if self.circuit else super().validation_spec()


def torch_runner(model: torch.nn.Module, device: torch.device, chunk: int = 8192):
    """Wrap a model as a numpy ``inputs -> outputs`` runner (inference mode, chunked)."""
    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            outputs = [model(torch.from_numpy(inputs[i: i + chunk]).to(device)).float().cpu().numpy()
                       for i in range(0, len(inputs), chunk)]
        return np.concatenate(outputs)
    return run


def window_inputs_and_targets(geometry: PreDecoderGeometry, window: int, events: np.ndarray,
                              errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (round windows) and edge targets of DEM samples, both ``[shots * T, ...]``."""
    windows = round_windows(geometry.layout.to_dense(events), window)
    return windows, geometry.targets(geometry.edges.labels(errors))


def _windows_and_targets(specs, batch: int, seed: int, geometry: PreDecoderGeometry, window: int, shard: Shard):
    for events, _, errors in DemStream(specs, batch, seed, shard):
        yield window_inputs_and_targets(geometry, window, events, errors)


class PreDecoderTask(TrainingTask):
    kind = "predecoder"

    def __init__(self, config: PreDecoderConfig, device: torch.device):
        self.config = config
        self.device = device
        # a resumed run or a fine-tune keeps its start's size and edge directions
        start = Path(config.out) / "checkpoint.pt" if config.resume else Path(config.init_from or "")
        start = load_checkpoint(start) if start.is_file() else {}
        self.architecture = start.get("architecture") or pick_size(PREDECODER_SIZES, config.size)
        # the recorded config names the size actually trained (a start's may differ from --size)
        config.size = next((name for name, arch in PREDECODER_SIZES.items() if arch == self.architecture), "custom")
        self.window = self.architecture["window"]
        directions = tuple(tuple(d) for d in start["directions"]) if "directions" in start else None
        self.geometry = PreDecoderGeometry(config.specs()[0], directions)
        self.model = PreDecoderCNN(len(self.geometry.directions), **self.architecture)
        self.mask = torch.from_numpy(self.geometry.logit_mask).to(device)  # [T, D, H, W]
        self.pos_weight = torch.tensor(config.pos_weight, device=device)
        self.threshold = config.threshold or 0.5
        self.isolated_only = False

    def batches(self, seed: int, rank: int, world_size: int):
        stream = functools.partial(_windows_and_targets, self.config.specs(), self.config.batch, seed, self.geometry,
                                   self.window)
        return sharded_batches(stream, rank, world_size, self.config.workers)

    def inputs_and_targets(self, events: np.ndarray, errors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self._on_device(window_inputs_and_targets(self.geometry, self.window, events, errors))

    def _on_device(self, pair) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.as_tensor(array).to(self.device, non_blocking=True) for array in pair)

    def loss(self, model, batch) -> torch.Tensor:
        x, y = self._on_device(batch)
        mask = self.mask.repeat(len(x) // self.mask.shape[0], 1, 1, 1)
        return F.binary_cross_entropy_with_logits(model(x)[mask].float(), y[mask], pos_weight=self.pos_weight)

    def pipeline(self, model, threshold: float, isolated_only: bool = False) -> PreDecoderPipeline:
        spec = self.config.validation_spec()
        return PreDecoderPipeline(spec, torch_runner(model, self.device), self.geometry.directions, self.window,
                                  threshold, isolated_only=isolated_only)

    def validate(self, model) -> dict:
        """Edge precision/recall on held-out DEM samples and pipeline LER vs matching on circuit shots."""
        spec = self.config.validation_spec()
        events, _, errors = spec.dem().compile_sampler(seed=10_000 + self.config.seed).sample(2048, return_errors=True)
        x, y = self.inputs_and_targets(events, errors)
        mask = self.mask.repeat(len(events), 1, 1, 1)
        logit_threshold = probability_logit(self.threshold)
        with torch.inference_mode():
            predicted = model(x)[mask] > logit_threshold
        truth = y[mask] > 0.5
        hits = (predicted & truth).sum().item()
        result = evaluate(spec, self.pipeline(model, self.threshold), self.config.val_shots, seed=20_000 + self.config.seed)
        return {"edge_precision": hits / max(1, predicted.sum().item()), "edge_recall": hits / max(1, truth.sum().item()),
                "val_ler": result["ler"], "val_matching_ler": result["baseline_ler"], "val_ler_ratio": result["ler_ratio"],
                "val_residual_fraction": result["residual_defect_fraction"], "val_shots": self.config.val_shots,
                "val_spec": spec.to_dict(), "threshold": self.threshold}

    def finish(self, model) -> dict:
        """Calibrate the edge threshold and the isolation gate (unless the threshold is fixed):
        lowest pipeline LER on fresh held-out shots, ties to fewer residual events."""
        if self.config.threshold is not None:
            return {}
        spec = self.config.validation_spec()
        table = []
        for isolated_only in (False, True):
            for threshold in CANDIDATE_THRESHOLDS:
                result = evaluate(spec, self.pipeline(model, threshold, isolated_only), self.config.val_shots,
                                  seed=30_000 + self.config.seed)
                table.append({"threshold": threshold, "isolated_only": isolated_only, "ler": result["ler"],
                              "ler_ratio": result["ler_ratio"], "residual_fraction": result["residual_defect_fraction"]})
        best = min(table, key=lambda row: (row["ler"], row["residual_fraction"]))
        self.threshold, self.isolated_only = best["threshold"], best["isolated_only"]
        return {"threshold_calibration": table}

    def checkpoint_fields(self) -> dict:
        return {"architecture": self.architecture, "directions": [list(d) for d in self.geometry.directions],
                "threshold": self.threshold, "isolated_only": self.isolated_only}


def bundle_checkpoint(bundle: str, out: str | Path) -> Path:
    """A pre-decoder bundle (shipped name or folder) as a checkpoint a fine-tune starts from, written
    to ``out/init-<name>.pt``: its weights, size and directions, and its training record as lineage."""
    path = resolve_model(bundle)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("kind") != "predecoder" or not (path / "model.pt").is_file():
        raise NqecError(f"--init-from {bundle}: expected a checkpoint or a pre-decoder bundle with model.pt "
                        f"(float weights); {path} is a {manifest.get('kind')} bundle"
                        f"{'' if (path / 'model.pt').is_file() else ' without model.pt'}")
    weights = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
    target = Path(out) / f"init-{manifest['name']}.pt"
    save_checkpoint(target, {"model": weights["model"], "architecture": weights["architecture"],
                             "directions": weights["directions"],
                             "provenance": {"bundle": manifest["name"], **manifest.get("training", {})}})
    return target


def train_predecoder(config: PreDecoderConfig, command: str = "") -> Path | None:
    """Train (single process or torchrun); returns the checkpoint path on rank 0, else None.
    ``config.init_from`` may name a bundle (see :func:`bundle_checkpoint`)."""
    if config.init_from and not Path(config.init_from).is_file():
        config = dataclasses.replace(config, init_from=str(bundle_checkpoint(config.init_from, config.out)))
    return train(PreDecoderTask, config, command)
