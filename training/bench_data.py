"""`nqec bench data`: samples/s of the training streams against Stim's raw samplers, same run."""

from __future__ import annotations

import itertools
import time

from decoder.spec import CodeSpec
from training.data import CircuitStream, DemStream, Shard


def _rate(batches, batch_size: int, count: int) -> float:
    iterator = iter(batches)
    next(iterator)  # compile and warm up outside the timed region
    start = time.perf_counter()
    for _ in itertools.islice(iterator, count):
        pass
    return batch_size * count / (time.perf_counter() - start)


def _raw_circuit(spec: CodeSpec, batch_size: int, seed: int):
    sampler = spec.circuit().compile_detector_sampler(seed=seed)
    while True:
        yield sampler.sample(batch_size, separate_observables=True)


def _raw_dem(spec: CodeSpec, batch_size: int, seed: int):
    sampler = spec.dem().compile_sampler(seed=seed)
    while True:
        yield sampler.sample(batch_size, return_errors=True)


def bench_data(spec: CodeSpec, batch_size: int = 1024, batches: int = 200, seed: int = 0, repeats: int = 3) -> dict:
    """Best-of-``repeats`` samples/s of each stream and its raw Stim sampler, interleaved."""
    pairs = {
        "circuit": (lambda: CircuitStream(spec, batch_size, seed, shard=Shard()), lambda: _raw_circuit(spec, batch_size, seed)),
        "dem": (lambda: DemStream(spec, batch_size, seed, shard=Shard()), lambda: _raw_dem(spec, batch_size, seed)),
    }
    results = {}
    for name, (stream, raw) in pairs.items():
        stream_rates, raw_rates = [], []
        for _ in range(repeats):
            raw_rates.append(_rate(raw(), batch_size, batches))
            stream_rates.append(_rate(stream(), batch_size, batches))
        results[name] = {
            "stream_samples_per_s": max(stream_rates),
            "stim_samples_per_s": max(raw_rates),
            "ratio": max(stream_rates) / max(raw_rates),
        }
    return {"spec": spec.to_dict(), "batch_size": batch_size, "batches": batches, "repeats": repeats, "seed": seed,
            "streams": results}
