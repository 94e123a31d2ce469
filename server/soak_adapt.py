"""``nqec bench soak --adapt``: the soak's adapting models decode a drifted device.

With ``--adapt`` both replicas run ``nqec serve --adapt`` and every model that adapts (matching in
both modes, guided matching) gets its traffic from a device with a hot spot the server was not
built for (:data:`DRIFT`). Their answers cannot equal a fixed in-process decoder's (the server
swaps decoders as it learns), so they are judged by logical errors instead: over the run, against
the nominal in-process decoder on the same shots; after the run, once :data:`FEED_SHOTS` more
drifted shots went through the model and its adapter took them in, on :data:`HELD_OUT_SHOTS` fresh
shots, against the same decoder given the true DEM (what a server started with the true DEM answers).
"""

from __future__ import annotations

import json
import time

import numpy as np

from decoder.events import pack_bits
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from training.bench_drift import Drift, paired_ratio

DRIFT = Drift("hot-spot", 0.03, 3)
ADAPT_SHOTS, ADAPT_EVERY = 30_000, 5000  # the servers' --adapt-shots and --adapt-every
POOL_SHOTS = 1 << 15  # drifted shots the load's requests to an adapting model are drawn from
FEED_SHOTS = 60_000  # fresh drifted shots each adapting model decodes after the load
HELD_OUT_SHOTS = 50_000  # fresh drifted shots the recovery is measured on
REQUEST_SHOTS = 1000
# Errors of an adapting model ÷ those of the decoder given the true DEM after the run, or of the nominal
# decoder over it: a failure only where the data say so (the held-out ratio's paired 95% interval above
# it, 5e4 shots pin it to about +-0.08; over the run, more than 3 sigma of Poisson noise above it).
MAX_RATIO = 1.1


def server_args() -> tuple[str, ...]:
    """``nqec serve`` flags of an adapting replica."""
    return "--adapt", "--adapt-shots", str(ADAPT_SHOTS), "--adapt-every", str(ADAPT_EVERY)


def drifted_shots(spec, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit-packed detection events and bool observable flips of ``spec``'s circuit with :data:`DRIFT`."""
    circuit = DRIFT.apply(spec.circuit())
    events, observables = circuit.compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    return pack_bits(events), observables


def true_dem(spec):
    """The DEM of ``spec``'s circuit with :data:`DRIFT`."""
    return DRIFT.apply(spec.circuit()).detector_error_model(decompose_errors=True)


def _adapt_info(client: DecoderClient, model: str) -> dict:
    return json.loads(client.call("GetModelInfo", pb2.GetModelInfoRequest(model=model)).metrics_json).get("adapt", {})


def _feed(client: DecoderClient, model: str, spec, seed: int, timeout: float = 180.0) -> dict:
    """Decode FEED_SHOTS fresh drifted shots on ``model``, then wait until its adapter has taken them
    all in (or dropped them) and swapped in a decoder on an estimate that includes them."""
    before = _adapt_info(client, model)
    events, _ = drifted_shots(spec, FEED_SHOTS, seed)
    for start in range(0, FEED_SHOTS, REQUEST_SHOTS):
        client.decode(model, events[start: start + REQUEST_SHOTS], timeout=60)
    target = before.get("shots_seen", 0) + before.get("shots_dropped", 0) + FEED_SHOTS
    deadline = time.monotonic() + timeout
    while True:
        info = _adapt_info(client, model)
        if info.get("shots_seen", 0) + info.get("shots_dropped", 0) >= target \
                and info.get("shots_since_update", 0) < info.get("every", 1):
            return info
        if not info or "paused" in info or time.monotonic() > deadline:  # not adapting, paused, or stuck
            return {**info, "caught_up": False}
        time.sleep(0.2)


def recovery(client: DecoderClient, adapting: dict, seed: int) -> dict:
    """Per adapting model (``adapting``: name -> (spec, its in-process nominal decoder)): feed it, then
    its errors on HELD_OUT_SHOTS fresh drifted shots ÷ those of the same decoder given the true DEM
    and of the nominal one, with paired 95% intervals."""
    result = {}
    for index, (model, (spec, nominal)) in enumerate(adapting.items()):
        info = _feed(client, model, spec, seed + 2 * index)
        events, observables = drifted_shots(spec, HELD_OUT_SHOTS, seed + 2 * index + 1)
        answers, _, _ = client.decode(model, events, timeout=300)
        wrong = {"server": (answers != observables).any(axis=1),
                 "true_dem": (nominal.with_dem(true_dem(spec)).decode_batch(events) != observables).any(axis=1),
                 "nominal": (nominal.decode_batch(events) != observables).any(axis=1)}
        result[model] = {"updates": info.get("updates", 0), "caught_up": info.get("caught_up", True),
                         "paused": info.get("paused"), "shots": HELD_OUT_SHOTS,
                         "errors": {name: int(w.sum()) for name, w in wrong.items()},
                         "vs_true_dem": paired_ratio(wrong["server"], wrong["true_dem"], seed=seed),
                         "nominal_vs_true_dem": paired_ratio(wrong["nominal"], wrong["true_dem"], seed=seed)}
    return result


def failures(run_errors: dict, recovered: dict) -> list[str]:
    """What the adapting models got wrong: over the run, clearly more than MAX_RATIO x the nominal
    decoder's errors on the same shots; after it, surely more than MAX_RATIO x the true DEM's (the 95% interval
    above it), a paused or lagging adapter."""
    found = []
    for model, (server, static) in run_errors.items():
        if server > MAX_RATIO * static + 3 * np.sqrt(server + static):
            found.append(f"{model}: {server} errors over the run vs {static} for the nominal decoder")
    for model, row in recovered.items():
        if row["vs_true_dem"]["ratio_95"][0] > MAX_RATIO:
            found.append(f"{model}: {row['vs_true_dem']['ratio']:.2f}x the true DEM's errors after the drift")
        if row["paused"] or not row["caught_up"]:
            found.append(f"{model}: adaptation {'paused' if row['paused'] else 'did not catch up'}")
    return found
