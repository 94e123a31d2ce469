"""Measure `nqec serve --adapt` at d=5 r=5 p=0.003 while a hot spot appears and fades.

Two loopback servers in this process decode the same shots, both matching modes: one with
``--adapt`` (starts from the nominal DEM and learns from what it decodes), and one serving, without
adaptation, the nominal DEM and (as other models) the true DEM of each segment. The
device runs nominal, drifted (three data qubits in a row +0.03 depolarizing per round), nominal;
shots go in requests of 1,000, one client, nothing waits for the adapter. Per window of 10,000 shots:
errors of each server; per segment: LER of each, ``recovered_after_shots`` (end of the first window
whose adaptive errors are within 1.1x the true-DEM server's), errors ÷ true-DEM errors after recovery
with a 95% paired bootstrap interval, client-side request latency p50/p99. Every adaptive answer is
checked against in-process matching on each DEM the model held around that request (none may differ
from all), and no model may end dead or paused. Writes results/adapt-d5.json.
Two runs by default: ``--adapt-shots 30000 --adapt-every 5000`` (a fast follower) and the defaults
(100,000 and 10,000). Run: ``nice -n 10 .venv/bin/python results/adapt_d5.py [--runs SHOTS:EVERY ...] [--seed S]``.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from decoder import CodeSpec, MatchingDecoder
from decoder.events import pack_bits
from server.app import ServerConfig, start_server
from server.client import DecoderClient
from server.models import ServedModel, detectors_per_round, matching_model_name
from training.bench_drift import Drift, _rate, paired_ratio

SPEC, DRIFT = CodeSpec(5, 5, 0.003), Drift("hot-spot", 0.03, 3)
SEGMENTS = ((100_000, False), (200_000, True), (200_000, False))
WINDOW, REQUEST = 10_000, 1000
MODES = ("uncorrelated", "correlated")


def served(name: str, dem, correlated: bool) -> ServedModel:
    decoder = MatchingDecoder(dem, correlations=correlated)
    return ServedModel(name, "matching", decoder.name, SPEC, decoder, detectors_per_round(SPEC), {})


def percentiles_ms(seconds: list[float]) -> dict:
    return {"p50_ms": 1e3 * float(np.quantile(seconds, 0.5)), "p99_ms": 1e3 * float(np.quantile(seconds, 0.99))}


def run(adapt_shots: int, adapt_every: int, seed: int) -> dict:
    """One pass of the three segments through both servers, --adapt-shots/--adapt-every as given."""
    circuits = {False: SPEC.circuit(), True: DRIFT.apply(SPEC.circuit())}
    dems = {flag: c.detector_error_model(decompose_errors=True) for flag, c in circuits.items()}
    names = {mode: matching_model_name(SPEC, mode == "correlated") for mode in MODES}
    adaptive = start_server(ServerConfig(port=0, adapt=True, adapt_shots=adapt_shots, adapt_every=adapt_every),
                            {names[m]: served(names[m], dems[False], m == "correlated") for m in MODES})
    static = start_server(ServerConfig(port=0), {
        **{names[m]: served(names[m], dems[False], m == "correlated") for m in MODES},
        **{f"true-{m}": served(f"true-{m}", dems[True], m == "correlated") for m in MODES}})
    clients = {"adaptive": DecoderClient([f"127.0.0.1:{adaptive.port}"]),
               "static": DecoderClient([f"127.0.0.1:{static.port}"])}
    held = {}  # every decoder each adaptive model was given, in order: an answer must be one of theirs
    for mode in MODES:
        batcher = adaptive.service.batchers[names[mode]]
        held[mode] = [batcher.decoder]
        batcher.replace_decoder = lambda decoder, swap=batcher.replace_decoder, given=held[mode]: (
            given.append(decoder), swap(decoder))
    unexplained = {mode: 0 for mode in MODES}
    started = time.perf_counter()
    segments = []
    for index, (shots, flag) in enumerate(SEGMENTS):
        sampler = circuits[flag].compile_detector_sampler(seed=seed + index)
        modes = {}
        for mode in MODES:
            targets = {"adaptive": (clients["adaptive"], names[mode]), "nominal": (clients["static"], names[mode]),
                       "true": (clients["static"], f"true-{mode}" if flag else names[mode])}
            modes[mode] = {"wrong": {n: [] for n in targets}, "latency": {"adaptive": [], "nominal": []},
                           "targets": targets}
        for _ in range(shots // WINDOW):
            events, observables = sampler.sample(WINDOW, separate_observables=True)
            packed = pack_bits(events)
            for mode, state in modes.items():
                for name, (client, model) in state["targets"].items():
                    flips = []
                    for start in range(0, WINDOW, REQUEST):
                        part = packed[start: start + REQUEST]
                        first = max(len(held[mode]) - 2, 0)  # in effect: the last one, or the one before it
                        begin = time.perf_counter()
                        flips.append(client.decode(model, part)[0])
                        if name in state["latency"]:
                            state["latency"][name].append(time.perf_counter() - begin)
                        if name == "adaptive":
                            unexplained[mode] += not any(np.array_equal(flips[-1], decoder.decode_batch(part))
                                                         for decoder in held[mode][first:])
                    state["wrong"][name].append((np.concatenate(flips) != observables).any(axis=1))
        result = {"shots": shots, "drifted": flag, "modes": {}}
        for mode, state in modes.items():
            per_window = {n: [int(w.sum()) for w in windows] for n, windows in state["wrong"].items()}
            recovered = next((k + 1 for k, (a, t) in enumerate(zip(per_window["adaptive"], per_window["true"]))
                              if a <= 1.1 * t), None)
            wrong = {n: np.concatenate(w) for n, w in state["wrong"].items()}
            after = slice(WINDOW * recovered, None) if recovered else slice(0, 0)
            result["modes"][mode] = {
                "servers": {n: _rate(w) for n, w in wrong.items()},
                "window_errors": per_window,
                "recovered_after_shots": WINDOW * recovered if index and recovered else None,
                "after_recovery_vs_true": None if not index or not recovered or after.start >= shots else {
                    n: {**paired_ratio(wrong[n][after], wrong["true"][after], seed=seed),
                        "shots": shots - after.start} for n in ("adaptive", "nominal")},
                "latency": {n: percentiles_ms(s) for n, s in state["latency"].items()}}
        segments.append(result)
        errors = {m: {n: r["errors"] for n, r in v["servers"].items()} for m, v in result["modes"].items()}
        print(json.dumps({"adapt_shots": adapt_shots, "segment": index, "drifted": flag, **errors}), flush=True)
    adapt = {names[m]: adaptive.service.adapters[names[m]].summary() for m in MODES}
    checks = {"requests_checked": {m: sum(s for s, _ in SEGMENTS) // REQUEST for m in MODES},
              "answers_of_no_held_decoder": unexplained, "decoders_held": {m: len(held[m]) for m in MODES},
              "dead_models": sorted(n for n, b in adaptive.service.batchers.items() if not b.alive),
              "paused_adapters": sorted(n for n, a in adaptive.service.adapters.items() if a.error)}
    for client in clients.values():
        client.close()
    adaptive.stop(grace=1)
    static.stop(grace=1)
    return {"adapt_shots": adapt_shots, "adapt_every": adapt_every, "wall_s": time.perf_counter() - started,
            "checks": checks, "segments": segments, "adapters_at_end": adapt}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="+", default=["30000:5000", "100000:10000"], metavar="SHOTS:EVERY",
                        help="--adapt-shots:--adapt-every of each run (default: a fast follower, then the defaults)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("adapt-d5.json")))
    args = parser.parse_args()
    runs = [run(*map(int, r.split(":")), args.seed) for r in args.runs]
    out = {"issue": 23, "spec": SPEC.to_dict(), "drift": {"kind": DRIFT.kind, "strength": DRIFT.strength,
                                                           "size": DRIFT.size},
           "segments_shots": [s for s, _ in SEGMENTS], "drifted": [f for _, f in SEGMENTS], "window": WINDOW,
           "request_shots": REQUEST, "seed": args.seed, "command": " ".join(["nice -n 10 .venv/bin/python", *sys.argv]),
           "machine": f"{platform.node()} ({platform.machine()})",
           "note": "servers: adaptive = nqec serve --adapt from the nominal DEM; nominal = the nominal DEM; true = "
                   "the DEM of the circuit that made the segment's shots. Same shots for all. recovered_after_shots: "
                   "end of the first window of the segment whose adaptive errors <= 1.1x the true-DEM server's; "
                   "after_recovery_vs_true: errors / true-DEM errors on the rest of the segment, 95% paired bootstrap; "
                   "latency: client-side per request of request_shots shots (one client, 2-core VM shared with "
                   "other work)",
           "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
