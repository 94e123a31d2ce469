"""Seeded, infinite batch streams from Stim, sharded over DataLoader workers and DDP ranks.

Each shard (rank, worker) gets its own seed derived from the base seed with
``numpy.random.SeedSequence``, so shards draw independent streams and a run is
reproducible from ``(seed, world_size, num_workers)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator

import numpy as np
import stim

from decoder.spec import CodeSpec


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which slice of the data this process (and DataLoader worker) draws."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def seed(self, base_seed: int) -> int:
        """A 63-bit Stim seed unique to ``(base_seed, rank, worker)``."""
        sequence = np.random.SeedSequence([base_seed, self.rank, self.worker])
        return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    @classmethod
    def current(cls) -> "Shard":
        """The shard of the calling process: torch.distributed rank and DataLoader worker."""
        import torch.distributed as dist
        import torch.utils.data

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(rank=rank, world_size=world, worker=worker, num_workers=workers)


class _MixtureStream:
    """Draws each batch from one of several experiments (CodeSpec or CircuitSpec), chosen by a seeded
    random order."""

    def __init__(self, specs, batch_size: int, seed: int, shard: Shard | None = None):
        self.specs = [specs] if hasattr(specs, "circuit") else list(specs)  # one experiment, or several
        if not self.specs:
            raise ValueError("a stream needs at least one experiment")
        self.batch_size = batch_size
        self.seed = seed
        self.shard = shard

    def _sampler(self, spec, seed: int):
        raise NotImplementedError

    def _draw(self, sampler) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        shard_seed = (self.shard or Shard.current()).seed(self.seed)
        samplers = [self._sampler(spec, shard_seed + i) for i, spec in enumerate(self.specs)]
        rng = np.random.default_rng(shard_seed)
        while True:
            for index in rng.integers(len(samplers), size=4096):
                yield self._draw(samplers[index])


class CircuitStream(_MixtureStream):
    """Infinite ``(detection_events, observable_flips)`` batches from the circuit sampler.

    Example:
        >>> stream = CircuitStream([CodeSpec(3, 3, 0.003)], batch_size=8, seed=1, shard=Shard())
        >>> events, obs = next(iter(stream))
        >>> events.shape, obs.shape
        ((8, 24), (8, 1))
    """

    def __init__(self, specs, batch_size: int, seed: int, shard: Shard | None = None, bit_packed: bool = False):
        super().__init__(specs, batch_size, seed, shard)
        self.bit_packed = bit_packed

    def _sampler(self, spec, seed: int) -> stim.CompiledDetectorSampler:
        return spec.circuit().compile_detector_sampler(seed=seed)

    def _draw(self, sampler: stim.CompiledDetectorSampler) -> tuple[np.ndarray, np.ndarray]:
        return sampler.sample(self.batch_size, separate_observables=True, bit_packed=self.bit_packed)


class DemStream(_MixtureStream):
    """Infinite ``(detection_events, observable_flips, fired_errors)`` batches from the DEM sampler.

    ``fired_errors`` is ``bool [batch, num_errors]``: which DEM error mechanisms fired,
    the label source for the pre-decoder.
    """

    def _sampler(self, spec, seed: int) -> stim.CompiledDemSampler:
        return spec.dem().compile_sampler(seed=seed)

    def _draw(self, sampler: stim.CompiledDemSampler) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return sampler.sample(self.batch_size, return_errors=True)


class _ShardedInWorkers:
    """An iterable dataset that runs ``stream_for(shard)`` in each DataLoader worker, one shard each."""

    def __init__(self, stream_for: Callable[[Shard], Iterable], rank: int, world_size: int):
        self.stream_for, self.rank, self.world_size = stream_for, rank, world_size

    def __iter__(self):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return iter(self.stream_for(Shard(self.rank, self.world_size, *workers)))


def sharded_batches(stream_for: Callable[[Shard], Iterable], rank: int, world_size: int, workers: int = 0) -> Iterator:
    """Batches of ``stream_for(shard)``, drawn in this process (``workers=0``) or in ``workers``
    DataLoader processes, each with its own shard (numpy arrays arrive as torch tensors).

    ``workers=1`` draws the same stream as ``workers=0``, in the background.

    Example:
        >>> import functools
        >>> batches = sharded_batches(functools.partial(CircuitStream, CodeSpec(3, 3, 0.003), 8, 1), 0, 1)
        >>> next(batches)[0].shape
        (8, 24)
    """
    if workers == 0:
        return iter(stream_for(Shard(rank=rank, world_size=world_size)))
    import torch.utils.data

    class Dataset(_ShardedInWorkers, torch.utils.data.IterableDataset):
        pass

    loader = torch.utils.data.DataLoader(Dataset(stream_for, rank, world_size), batch_size=None, num_workers=workers,
                                         prefetch_factor=4, persistent_workers=True,
                                         pin_memory=torch.cuda.is_available())
    return iter(loader)
