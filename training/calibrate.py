"""Calibrate how guided matching mixes a pre-decoder's posteriors with the DEM prior.

The network runs once on held-out shots; each candidate ``(matching mode, mix, temperature)``
only reweights and re-matches them. The lowest LER wins (ties: uncorrelated, then the smaller
mix, closer to plain matching).

Example:
    >>> bundle = Bundle.load("predecoder-fpga")
    >>> result = calibrate_guided(bundle, CodeSpec(3, 3, 0.005), shots=500, seed=1)
    >>> len(result["table"]), result["table"][0]["matching"], result["table"][0]["mix"]
    (50, 'uncorrelated', 0.0)
    >>> min(row["errors"] for row in result["table"]) <= result["matching_errors"]
    True
    >>> curve = reliability_curve(bundle, CodeSpec(5, 5, 0.003), shots=200, seed=1)
    >>> curve["edges_scored"], sum(b["count"] for b in curve["bins"]), curve["ece"] < 0.01
    (100400, 100400, True)
"""

from __future__ import annotations

import numpy as np

from decoder.bundle import Bundle
from decoder.events import as_bool_events
from decoder.experiment import CircuitSpec
from decoder.matching import MATCHING_MODES
from decoder.spec import CodeSpec

MIXES = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
TEMPERATURES = (1.0, 1.5, 2.5)


def calibrate_guided(bundle: Bundle, spec: CodeSpec | CircuitSpec, shots: int, seed: int,
                     modes: tuple[str, ...] = MATCHING_MODES) -> dict:
    """Grid-search the matching mode, ``mix`` and ``temperature`` on ``shots`` held-out shots of ``spec``
    (a code spec or the user's circuit file).

    Returns ``{"matching", "mix", "temperature", "table": [...], "spec", "shots", "seed",
    "matching_errors"}``; ``matching_errors`` is mix 0 uncorrelated: plain matching."""
    events, observables = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    table = []
    for mode in modes:
        pipeline = bundle.decoder(spec, pipeline="guided-matching", matching=mode)
        bits = as_bool_events(events, pipeline.num_detectors)
        if mode == modes[0]:
            network = np.concatenate([pipeline.network_logits(bits[i: i + pipeline.chunk_shots])
                                      for i in range(0, shots, pipeline.chunk_shots)])
        for mix in (0.0, *MIXES):
            for temperature in TEMPERATURES if mix else (1.0,):
                weights = -pipeline.mixed_logits(network, mix, temperature)
                errors = int(np.any(pipeline.matcher.decode(bits, weights) != observables, axis=1).sum())
                table.append({"matching": mode, "mix": mix, "temperature": temperature, "errors": errors})
    best = min(table, key=lambda row: (row["errors"], MATCHING_MODES.index(row["matching"]), row["mix"]))
    return {"matching": best["matching"], "mix": best["mix"], "temperature": best["temperature"], "table": table,
            "spec": spec.to_dict(), "shots": shots, "seed": seed, "matching_errors": table[0]["errors"]}


RELIABILITY_EDGES = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def reliability_curve(bundle: Bundle, spec: CodeSpec | CircuitSpec, shots: int, seed: int) -> dict:
    """Are the pre-decoder's edge probabilities calibrated? On DEM samples of ``spec``, edge
    predictions are binned by predicted probability; each bin gives the mean prediction, the
    observed frequency of the edge firing and the count. ``ece``: the count-weighted mean
    |prediction - frequency| (expected calibration error)."""
    pipeline = bundle.decoder(spec, pipeline="guided-matching")
    events, _, errors = spec.dem().compile_sampler(seed=seed).sample(shots, return_errors=True)
    truth = pipeline.geometry.edges.labels(errors)[:, pipeline.geometry.predictable]
    logits = np.concatenate([pipeline.network_logits(events[i: i + pipeline.chunk_shots])
                             for i in range(0, shots, pipeline.chunk_shots)])
    predicted = (1 / (1 + np.exp(-logits.astype(np.float64)))).ravel()
    truth = truth.ravel()
    which = np.clip(np.searchsorted(RELIABILITY_EDGES, predicted, side="right") - 1, 0, len(RELIABILITY_EDGES) - 2)
    bins = []
    for index in range(len(RELIABILITY_EDGES) - 1):
        inside = which == index
        if inside.any():
            bins.append({"low": RELIABILITY_EDGES[index], "high": RELIABILITY_EDGES[index + 1],
                         "count": int(inside.sum()), "predicted": float(predicted[inside].mean()),
                         "observed": float(truth[inside].mean())})
    ece = sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in bins) / len(predicted)
    return {"bins": bins, "ece": ece, "edges_scored": int(len(predicted)), "spec": spec.to_dict(), "shots": shots,
            "seed": seed}
