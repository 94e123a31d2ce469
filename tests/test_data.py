import numpy as np
import torch

from decoder import CodeSpec
from training.data import CircuitStream, DemStream, Shard

SPEC = CodeSpec(3, 3, 0.01)


def first(stream, k=3):
    iterator = iter(stream)
    return [next(iterator) for _ in range(k)]


def test_streams_are_reproducible_from_the_seed():
    a = first(CircuitStream(SPEC, 64, seed=5, shard=Shard()))
    b = first(CircuitStream(SPEC, 64, seed=5, shard=Shard()))
    c = first(CircuitStream(SPEC, 64, seed=6, shard=Shard()))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_shards_draw_different_data():
    shards = [Shard(rank=r, world_size=2, worker=w, num_workers=2) for r in range(2) for w in range(2)]
    seeds = {s.seed(0) for s in shards}
    assert len(seeds) == 4
    batches = [first(CircuitStream(SPEC, 256, seed=0, shard=s), 1)[0][0] for s in shards]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(batches[i], batches[j])


def test_dem_stream_errors_reproduce_the_events():
    dem = SPEC.dem()
    events, obs, errors = first(DemStream(SPEC, 500, seed=1, shard=Shard()), 1)[0]
    assert errors.shape == (500, dem.num_errors)
    # XOR of the fired mechanisms' symptoms must equal the sampled events and observables.
    symptoms = np.zeros((dem.num_errors, dem.num_detectors), dtype=np.uint8)
    flips = np.zeros((dem.num_errors, dem.num_observables), dtype=np.uint8)
    k = 0
    for inst in dem.flattened():
        if inst.type == "error":
            for target in inst.targets_copy():
                if target.is_relative_detector_id():
                    symptoms[k, target.val] ^= 1
                elif target.is_logical_observable_id():
                    flips[k, target.val] ^= 1
            k += 1
    assert np.array_equal((errors.astype(np.uint8) @ symptoms) % 2 == 1, events)
    assert np.array_equal((errors.astype(np.uint8) @ flips) % 2 == 1, obs)


def test_p_mixture_draws_from_every_spec():
    specs = [SPEC.with_p(0.001), SPEC.with_p(0.05)]
    counts = [batch[0].sum() for batch in first(CircuitStream(specs, 200, seed=3, shard=Shard()), 40)]
    # Batches at p=0.05 light ~10x more detectors than at p=0.001: both must appear.
    assert min(counts) < 0.3 * max(counts)


class _TorchStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        for events, obs in CircuitStream(SPEC, 128, seed=9):
            yield torch.from_numpy(events), torch.from_numpy(obs)


def test_dataloader_workers_get_distinct_shards():
    loader = torch.utils.data.DataLoader(_TorchStream(), batch_size=None, num_workers=2)
    iterator = iter(loader)
    batches = [next(iterator)[0] for _ in range(4)]  # workers alternate: 0, 1, 0, 1
    assert not torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[2], batches[3])
