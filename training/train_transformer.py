"""Train the transformer decoder on circuit samples (a mixture over p); single process or torchrun."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from decoder.layout import Layout
from decoder.nets import TRANSFORMER_SIZES, TransformerDecoderNet
from decoder.transformer import TransformerPipeline
from training.data import CircuitStream, Shard, sharded_batches
from training.evaluate import evaluate
from training.loop import TrainConfig, TrainingTask, pick_size, train
from training.syndrome_table import SyndromeTable
from training.train_predecoder import torch_runner

CANDIDATE_FALLBACKS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)


@dataclasses.dataclass
class TransformerConfig(TrainConfig):
    distance: int = 3
    ps: tuple[float, ...] = (0.001, 0.003, 0.005)
    size: str = "small"
    lr: float = 1e-3
    fallback_threshold: float | None = None  # None: calibrate on held-out shots after training
    table_shots: int = 0  # > 0: count this many samples once and train on their syndrome table (small codes)
    table_tempering: float = 0.5  # how a syndrome table is drawn from; see SyndromeTable.stream
    out: str = "runs/transformer"


class TransformerTask(TrainingTask):
    kind = "transformer"

    def __init__(self, config: TransformerConfig, device: torch.device):
        self.config = config
        self.device = device
        self.architecture = pick_size(TRANSFORMER_SIZES, config.size)
        self.spec = config.validation_spec()
        self.layout = Layout.from_circuit(self.spec.circuit())
        self.model = TransformerDecoderNet(self.layout, self.spec.circuit().num_observables, **self.architecture)
        self.fallback_threshold = config.fallback_threshold or 0.0
        self.table_summary: dict | None = None

    def batches(self, seed: int, rank: int, world_size: int):
        if not self.config.table_shots:
            stream = functools.partial(CircuitStream, self.config.specs(), self.config.batch, seed)
            return sharded_batches(stream, rank, world_size, self.config.workers)
        shard = Shard(rank=rank, world_size=world_size)
        # Every rank counts the same table (the run's seed); ranks draw different batches from it.
        start = time.perf_counter()
        table = SyndromeTable.sample(self.config.specs(), self.config.table_shots, self.config.seed)
        self.table_summary = {"shots": table.shots, "distinct_syndromes": len(table.counts),
                              "seconds": round(time.perf_counter() - start, 1)}
        return table.stream(self.config.batch, shard.seed(seed), self.config.table_tempering)

    def loss(self, model, batch) -> torch.Tensor:
        """BCE against observable flips (raw samples) or flip rates weighted per syndrome (a table)."""
        events, targets = (np.asarray(array) for array in batch[:2])
        x = torch.from_numpy(self.layout.to_dense(events)).to(self.device)
        y = torch.from_numpy(targets.astype(np.float32, copy=False)).to(self.device)
        weight = torch.as_tensor(batch[2]).to(self.device)[:, None] if len(batch) == 3 else None
        return F.binary_cross_entropy_with_logits(model(x).float(), y, weight=weight)

    def pipeline(self, model, fallback_threshold: float) -> TransformerPipeline:
        return TransformerPipeline(self.spec, self.spec, torch_runner(model, self.device), fallback_threshold)

    def validate(self, model) -> dict:
        """LER of the network alone and with fallback, against matching on the same held-out shots."""
        alone = evaluate(self.spec, self.pipeline(model, 0.0), self.config.val_shots, seed=20_000 + self.config.seed)
        return {"val_ler": alone["ler"], "val_matching_ler": alone["baseline_ler"], "val_ler_ratio": alone["ler_ratio"],
                "val_shots": self.config.val_shots, "val_spec": self.spec.to_dict()}

    def finish(self, model) -> dict:
        """Pick the fallback threshold with the lowest LER on fresh held-out shots (ties: less fallback)."""
        if self.config.fallback_threshold is not None:
            return {}
        table = []
        for threshold in CANDIDATE_FALLBACKS:
            result = evaluate(self.spec, self.pipeline(model, threshold), self.config.val_shots,
                              seed=30_000 + self.config.seed)
            table.append({"fallback_threshold": threshold, "ler": result["ler"], "ler_ratio": result["ler_ratio"],
                          "fallback_fraction": result["stage_fraction"]["matching"]})
        self.fallback_threshold = min(table, key=lambda row: (row["ler"], row["fallback_fraction"]))["fallback_threshold"]
        return {"fallback_calibration": table}

    def checkpoint_fields(self) -> dict:
        fields = {"architecture": self.architecture, "fallback_threshold": self.fallback_threshold}
        return {**fields, "syndrome_table": self.table_summary} if self.table_summary else fields


def train_transformer(config: TransformerConfig, command: str = "") -> Path | None:
    """Train (single process or torchrun); returns the checkpoint path on rank 0, else None."""
    return train(TransformerTask, config, command)
