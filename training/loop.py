"""Pieces every training loop shares: DDP set-up, LR schedule, checkpoints, metric logs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist


@dataclasses.dataclass
class Distributed:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on GPU)."""
    if "RANK" not in os.environ:
        return Distributed(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return Distributed(rank=rank, world_size=world, device=device)


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to ``base / 10``.

    >>> [round(cosine_lr(step, 100, 1.0, 10), 3) for step in (0, 9, 10, 55, 99)]
    [0.1, 1.0, 1.0, 0.55, 0.1]
    """
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def machine_description(device: torch.device) -> str:
    """Where a model trained: host, processor count and accelerator."""
    if device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    else:
        accelerator = f"CPU ({torch.get_num_threads()} threads)"
    return f"{socket.gethostname()} {platform.machine()} {os.cpu_count()} cores, {accelerator}"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically, so a run killed mid-save can still resume from the last good checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class MetricsLog:
    """Appends one JSON line per record to ``metrics.jsonl`` (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.start = time.time()
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"time_s": round(time.time() - self.start, 3), **record}) + "\n")


@dataclasses.dataclass
class TrainConfig:
    """Settings every training run shares; model-specific configs extend it."""

    distance: int = 5
    rounds: int | None = None
    ps: tuple[float, ...] = (0.003,)
    basis: str = "z"
    noise: str = "depolarizing"
    size: str = ""
    steps: int = 2000
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    val_every: int = 500
    val_shots: int = 20_000
    out: str = "runs/model"
    resume: bool = False
    init_from: str | None = None  # a checkpoint whose weights start a new run (fine-tuning), if not resuming
    workers: int = 0  # DataLoader processes drawing samples (0: in the training process)

    def specs(self):
        """One CodeSpec per training p (the data is a mixture over them)."""
        from decoder.spec import CodeSpec

        rounds = self.distance if self.rounds is None else self.rounds
        return [CodeSpec(self.distance, rounds, p, self.basis, self.noise) for p in self.ps]

    def validation_spec(self):
        """Validate at the median training p."""
        return self.specs()[len(self.ps) // 2]


def pick_size(sizes: dict[str, dict], size: str) -> dict:
    """The architecture of a named model size (a copy), or a clear error listing the sizes."""
    if size not in sizes:
        raise ValueError(f"size must be one of {sorted(sizes)}, got {size!r}")
    return dict(sizes[size])


class TrainingTask:
    """What a model brings to :func:`fit`: its network, data, loss, validation and final touches."""

    kind: str
    model: torch.nn.Module

    def batches(self, seed: int, rank: int, world_size: int):
        """Infinite iterator of training batches for this rank."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module) -> dict:
        raise NotImplementedError

    def finish(self, model: torch.nn.Module) -> dict:
        """After the last step (main process): extra checkpoint fields, e.g. calibrated thresholds."""
        return {}

    def checkpoint_fields(self) -> dict:
        """Fields needed to rebuild the model (architecture, vocabulary, ...)."""
        return {}


def fit(task: TrainingTask, config: TrainConfig, distributed: Distributed, command: str = "") -> Path:
    """The training loop: AdamW, warm-up + cosine LR, clipping, bf16 autocast on GPU, DDP,
    periodic validation, atomic checkpoints and resume. Returns the checkpoint path."""
    from rich.progress import Progress

    device = distributed.device
    model = task.model.to(device)
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_step, elapsed_before, metrics, parent = 0, 0.0, {}, None
    if config.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, elapsed_before, metrics = state["step"], state["provenance"]["wall_seconds"], state["metrics"]
        parent = state["provenance"].get("parent")
    elif config.init_from:
        state = load_checkpoint(Path(config.init_from))
        model.load_state_dict(state["model"])
        parent = state["provenance"]
    train_model = torch.nn.parallel.DistributedDataParallel(model) if distributed.world_size > 1 else model
    # A resumed run draws fresh data: the stream's seed includes the step it starts from.
    started = time.time()  # wall time includes preparing the data (e.g. counting a syndrome table)
    batches = task.batches(config.seed * 1_000_003 + start_step, distributed.rank, distributed.world_size)
    log = MetricsLog(out / "metrics.jsonl", distributed.is_main)

    def checkpoint(step: int, extra: dict | None = None) -> None:
        provenance = {
            "command": command, "seed": config.seed, "steps": step,
            "samples": step * config.batch * distributed.world_size,
            "wall_seconds": elapsed_before + time.time() - started, "machine": machine_description(device),
            "world_size": distributed.world_size, "data_workers": config.workers, "torch": torch.__version__,
            **({"parent": parent} if parent else {}),
        }
        save_checkpoint(checkpoint_path, {
            "kind": task.kind, "config": dataclasses.asdict(config), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, "provenance": provenance, "metrics": metrics,
            "parameters": sum(p.numel() for p in model.parameters()), **task.checkpoint_fields(), **(extra or {}),
        })

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with Progress(disable=not distributed.is_main, transient=True) as progress:
        bar = progress.add_task(f"training {task.kind}", total=config.steps, completed=start_step)
        for step in range(start_step, config.steps):
            lr = cosine_lr(step, config.steps, config.lr, config.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                loss = task.loss(train_model, next(batches))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            progress.update(bar, advance=1, description=f"training {task.kind} loss {loss.item():.4f}")
            done = step + 1
            if distributed.is_main and (done % config.val_every == 0 or done == config.steps):
                model.eval()
                metrics = task.validate(model)
                model.train()
                log.write(step=done, loss=loss.item(), lr=lr, **metrics)
                checkpoint(done)
            elif distributed.is_main and done % 50 == 0:
                log.write(step=done, loss=loss.item(), lr=lr)
    if distributed.is_main:
        model.eval()
        extra = task.finish(model)
        if extra:
            log.write(step=config.steps, **extra)
            checkpoint(config.steps, extra)
    if distributed.world_size > 1:
        dist.barrier()
    return checkpoint_path


def train(task_class: type[TrainingTask], config: TrainConfig, command: str = "") -> Path | None:
    """Set up (torchrun-aware), build ``task_class(config, device)`` and fit it.

    Returns the checkpoint path on the main process, None on the other ranks."""
    distributed = setup_distributed()
    torch.manual_seed(config.seed)
    try:
        path = fit(task_class(config, distributed.device), config, distributed, command)
    finally:
        teardown_distributed()
    return path if distributed.is_main else None
