"""Calibrate how guided matching mixes a pre-decoder's posteriors with the DEM prior.

The network runs once on held-out shots; each candidate ``(mix, temperature)`` only reweights
and re-matches them. The lowest LER wins (ties: the smaller mix, closer to plain matching).
"""

from __future__ import annotations

import numpy as np

from decoder.bundle import Bundle
from decoder.events import as_bool_events
from decoder.spec import CodeSpec

MIXES = (0.25, 0.5, 0.625, 0.75, 0.875, 1.0)
TEMPERATURES = (1.0, 1.5)


def calibrate_guided(bundle: Bundle, spec: CodeSpec, shots: int, seed: int) -> dict:
    """Grid-search ``mix`` and ``temperature`` on ``shots`` held-out shots of ``spec``.

    Returns ``{"mix", "temperature", "table": [...], "spec", "shots", "seed", "matching_errors"}``."""
    pipeline = bundle.decoder(spec, pipeline="guided-matching")
    events, observables = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    bits = as_bool_events(events, pipeline.num_detectors)
    network = np.concatenate([pipeline.network_logits(bits[i: i + pipeline.chunk_shots])
                              for i in range(0, shots, pipeline.chunk_shots)])
    table = []
    for mix in (0.0, *MIXES):
        for temperature in TEMPERATURES if mix else (1.0,):
            weights = -pipeline.mixed_logits(network, mix, temperature)
            errors = int(np.any(pipeline.matcher.decode(bits, weights) != observables, axis=1).sum())
            table.append({"mix": mix, "temperature": temperature, "errors": errors})
    best = min(table, key=lambda row: (row["errors"], row["mix"]))
    return {"mix": best["mix"], "temperature": best["temperature"], "table": table, "spec": spec.to_dict(),
            "shots": shots, "seed": seed, "matching_errors": table[0]["errors"]}
