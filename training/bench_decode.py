"""`nqec bench decode`: a pipeline's shots/s next to both PyMatching modes, same shots, same run.

Example:
    >>> from decoder import CodeSpec
    >>> result = bench_decode("matching", None, [CodeSpec(3, 3, 0.003)], shots=500, seconds=0.01)
    >>> row = result["rows"][0]
    >>> row["distance"], row["shots"], row["shots_per_s"] > 0, row["vs_correlated"] > 0
    (3, 500, True, True)
"""

from __future__ import annotations

import os
import platform
import time

from decoder.experiment import CircuitSpec
from decoder.interface import Decoder
from decoder.registry import build_decoder, build_matching
from decoder.spec import CodeSpec

BASELINES = ("matching", "matching-correlated")


def shots_per_second(decoder: Decoder, events, seconds: float) -> float:
    """Decode ``events`` whole, repeatedly for at least ``seconds`` (after one warm-up call); shots/s."""
    decoder.decode_batch(events[: min(len(events), 64)])
    runs, start = 0, time.perf_counter()
    while runs == 0 or time.perf_counter() - start < seconds:
        decoder.decode_batch(events)
        runs += 1
    return runs * len(events) / (time.perf_counter() - start)


def bench_decode(decoder_name: str, model: str | None, specs: list[CodeSpec | CircuitSpec], shots: int = 20_000,
                 seconds: float = 3.0, seed: int = 0) -> dict:
    """Shots/s of ``decoder_name`` (with ``model``) and of both PyMatching modes at each spec.

    Each row decodes the same ``shots`` Stim shots with the three decoders, one after the other in
    one process; ``vs_matching`` and ``vs_correlated`` are the pipeline's shots/s over theirs."""
    rows = []
    for spec in specs:
        events = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, bit_packed=True)
        decoders = {"pipeline": build_decoder(decoder_name, spec, model)}
        decoders.update({name: build_matching(name, spec.dem()) for name in BASELINES})
        rates = {name: shots_per_second(decoder, events, seconds) for name, decoder in decoders.items()}
        rows.append({"experiment": spec.label(), "distance": spec.distance, "rounds": spec.rounds, "p": spec.p,
                     "shots": shots,
                     "shots_per_s": rates["pipeline"], "matching_shots_per_s": rates["matching"],
                     "correlated_shots_per_s": rates["matching-correlated"],
                     "vs_matching": rates["pipeline"] / rates["matching"],
                     "vs_correlated": rates["pipeline"] / rates["matching-correlated"]})
    return {"decoder": decoder_name, "model": model, "seed": seed, "seconds_per_measurement": seconds, "rows": rows,
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)"}
