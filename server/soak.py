"""`nqec bench soak`: mixed traffic from several client processes against a loopback server.

Unary and streamed decodes of every kind of model (guided matching included), requests
cancelled mid-flight, deadlines too short to meet and oversized neural batches, all at once,
from clients that use two replicas; every answer is checked against in-process decoding of the
same shots. Faults meanwhile: the second replica is frozen (SIGSTOP) for a while, again and
again; a client process is killed in the middle of a 65,536-shot request, again and again; a
second server tries to start on the first one's port and must be refused. Afterwards every
model of both replicas must still answer correctly and report SERVING. Load goes to 127.0.0.1
only and stops by itself after ``seconds``. With ``adapt`` the replicas run ``--adapt`` and the
models that adapt decode a drifted device, judged by their logical errors (server/soak_adapt.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from decoder.bundle import Bundle
from decoder.events import pack_bits, unpack_bits
from decoder.registry import build_decoder
from decoder.spec import CodeSpec
from server.bench import local_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from server import soak_adapt
from server.adapt import adapts
from server.models import detectors_per_round, matching_model_name

MATCHING_SPEC = CodeSpec(5, 5, 0.003)
SHOTS_PER_MODEL = 4096
TRAFFIC = ("unary", "short_deadline", "cancelled", "stream_block", "large_neural")
GUIDED = "predecoder-fpga"  # served twice: hard commits, and as predecoder-fpga-guided
KILLED_REQUEST_SHOTS = 1 << 16  # the request a killed client process has in flight
FREEZE_S = 5.0  # the replica is frozen this long, then runs this long, until the load ends


@dataclasses.dataclass
class Reference:
    """Shots of one served model and the in-process answers they must get."""

    model: str
    events: np.ndarray  # bit-packed [shots, bytes]
    expected: np.ndarray  # bool [shots, observables]
    detectors_per_round: list[int]
    neural: bool
    truth: np.ndarray | None = None  # bool [shots, observables]: the real flips, for a model that adapts


def references(adapt: bool = False) -> tuple[list[Reference], dict]:
    """Matching in both modes at d=5 and every shipped bundle at its own spec; with ``adapt``, the
    shots of the models that adapt come from the drifted device. Also returns, for those models,
    ``name -> (spec, in-process decoder)`` (empty without ``adapt``)."""
    jobs = [(matching_model_name(MATCHING_SPEC), MATCHING_SPEC, build_decoder("matching", MATCHING_SPEC), False),
            (matching_model_name(MATCHING_SPEC, True), MATCHING_SPEC,
             build_decoder("matching-correlated", MATCHING_SPEC), False)]
    for name in ("transformer-d3", GUIDED):
        bundle = Bundle.load(name)
        jobs.append((name, bundle.spec, bundle.decoder(), True))
    guided = Bundle.load(GUIDED)
    jobs.append((f"{GUIDED}-guided", guided.spec, guided.decoder(pipeline="guided-matching"), True))
    refs, adapting = [], {}
    for seed, (model, spec, decoder, neural) in enumerate(jobs):
        truth = None
        if adapt and adapts(decoder):
            events, truth = soak_adapt.drifted_shots(spec, soak_adapt.POOL_SHOTS, seed)
            adapting[model] = (spec, decoder)
        else:
            events = spec.circuit().compile_detector_sampler(seed=seed).sample(SHOTS_PER_MODEL, bit_packed=True)
        refs.append(Reference(model, events, decoder.decode_batch(events), detectors_per_round(spec), neural, truth))
    return refs, adapting


def _block_requests(ref: Reference, rows: slice, block_id: str):
    bits = unpack_bits(ref.events[rows], sum(ref.detectors_per_round))
    bounds = np.cumsum([0, *ref.detectors_per_round])
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        yield pb2.StreamRequest(blocks=[pb2.RoundBlock(
            block_id=block_id, model=ref.model if index == 0 else "", num_experiments=rows.stop - rows.start,
            events=pack_bits(bits[:, lo:hi]).tobytes(), last=index == len(bounds) - 2)])


def _client_loop(targets: list[str], refs: list[Reference], seconds: float, seed: int, queue) -> None:
    """One client process: random traffic until ``seconds`` pass; puts its tallies on ``queue``."""
    rng = np.random.default_rng(seed)
    client = DecoderClient(targets)
    neural = [r for r in refs if r.neural]
    codes: collections.Counter = collections.Counter()
    wrong = calls = 0
    adapting_errors = {r.model: [0, 0] for r in refs if r.truth is not None}  # [server's, nominal decoder's]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kind = TRAFFIC[rng.integers(len(TRAFFIC))]
        ref = refs[rng.integers(len(refs))]
        if kind == "large_neural":
            ref = neural[rng.integers(len(neural))]
        size = {"large_neural": SHOTS_PER_MODEL, "stream_block": 64}.get(kind, int(rng.integers(1, 257)))
        start = int(rng.integers(0, len(ref.events) - size + 1))
        rows = slice(start, start + size)
        calls += 1
        try:
            if kind == "stream_block":
                responses = client.stream(lambda: _block_requests(ref, rows, f"b{calls}"), timeout=5)
                (block,) = [b for response in responses for b in response.blocks]
                if block.error:
                    codes[f"stream error: {block.error[:40]}"] += 1
                    continue
                packed = np.frombuffer(block.observable_flips, np.uint8).reshape(size, -1)
                flips = unpack_bits(packed, ref.expected.shape[1])
            elif kind == "cancelled":
                request = pb2.DecodeRequest(model=ref.model, detection_events=ref.events[rows].tobytes(), num_shots=size)
                future = client.stub().Decode.future(request, timeout=10)
                time.sleep(float(rng.uniform(0, 0.002)))
                future.cancel()
                codes["CANCELLED (by the client)"] += 1
                continue
            else:
                timeout = {"short_deadline": float(rng.uniform(0.0005, 0.005)), "large_neural": 0.3}.get(kind, 10.0)
                flips, _, _ = client.decode(ref.model, ref.events[rows], timeout=timeout)
            codes["OK"] += 1
            if ref.truth is None:
                wrong += int(np.any(flips != ref.expected[rows], axis=1).sum())
            else:  # the server's decoder changes as it learns: count logical errors instead
                adapting_errors[ref.model][0] += int(np.any(flips != ref.truth[rows], axis=1).sum())
                adapting_errors[ref.model][1] += int(np.any(ref.expected[rows] != ref.truth[rows], axis=1).sum())
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
    client.close()
    queue.put({"codes": dict(codes), "wrong": wrong, "calls": calls, "adapting_errors": adapting_errors})


def _killed_client(target: str, ref: Reference, ready) -> None:
    """A client process that sends one 65,536-shot request; it is killed while that is in flight."""
    client = DecoderClient([target])
    events = np.resize(ref.events, (KILLED_REQUEST_SHOTS, ref.events.shape[1]))
    client.model_info(ref.model)
    ready.set()
    client.decode(ref.model, events, timeout=60)


def _faults(target: str, replica, ref: Reference, seconds: float, context, faults: dict) -> None:
    """Until ``seconds`` pass: freeze the replica for :data:`FREEZE_S` and meanwhile kill a client
    process mid-request on ``target``; then let the replica run as long. Counts into ``faults``."""
    end = time.monotonic() + seconds
    freeze = min(FREEZE_S, seconds / 4)
    try:
        while time.monotonic() < end:
            os.kill(replica.pid, signal.SIGSTOP)
            thaw = time.monotonic() + freeze
            ready = context.Event()
            victim = context.Process(target=_killed_client, args=(target, ref, ready))
            victim.start()
            if ready.wait(timeout=60):
                time.sleep(0.3)  # the request is on its way or being decoded
                faults["clients_killed"] += 1
            victim.kill()
            victim.join(timeout=30)
            time.sleep(max(0.0, thaw - time.monotonic()))
            os.kill(replica.pid, signal.SIGCONT)
            faults["replica_freezes"] += 1
            time.sleep(max(0.0, min(freeze, end - time.monotonic())))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(replica.pid, signal.SIGCONT)


@contextlib.contextmanager
def _second_server(target: str):
    """``nqec serve`` on the port ``target`` already serves on, which must refuse to start;
    killed on the way out if it runs."""
    process = subprocess.Popen([sys.executable, "-m", "nqec", "serve", "--port", target.rsplit(":", 1)[1]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _refused(process: subprocess.Popen) -> bool:
    """Whether the second server exited saying the port is in use (it is killed if it runs on)."""
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return False
    return process.returncode != 0 and "cannot listen" in err


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _p99_ms(client: DecoderClient, ref: Reference, seconds: float) -> float:
    samples = []
    end = time.monotonic() + seconds
    index = 0
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            client.decode(ref.model, ref.events[index % SHOTS_PER_MODEL:][:1], timeout=5)
        except grpc.RpcError:
            pass  # counted by the clients' tallies; a probe only times
        samples.append(time.perf_counter() - start)
        index += 1
    return float(np.percentile(np.array(samples) * 1e3, 99))


def _dead_models(target: str, client: DecoderClient, refs: list[Reference]) -> list[str]:
    """Models that, after the load, fail to answer 64 shots correctly (a model that adapts: at all) or
    do not report SERVING."""
    dead = []
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for ref in refs:
            try:
                flips, _, _ = client.decode(ref.model, ref.events[:64], timeout=10)
                status = health.Check(health_pb2.HealthCheckRequest(service=ref.model), timeout=5).status
                right = flips.shape == ref.expected[:64].shape if ref.truth is not None else \
                    np.array_equal(flips, ref.expected[:64])
                if not right or status != health_pb2.HealthCheckResponse.SERVING:
                    dead.append(ref.model)
            except grpc.RpcError:
                dead.append(ref.model)
    return dead


FAST_START = ("--no-any-length",)  # the soak streams fixed-length models only


def soak(seconds: float, clients: int = 4, seed: int = 0, adapt: bool = False) -> tuple[dict, Table]:
    """Run the soak against two fresh loopback replicas; returns the JSON-ready result and a table.

    ``result["failures"]`` names every check that failed (wrong answers, dead models, a second
    server that started on a used port; with ``adapt``, adapting models worse than the nominal
    decoder over the run or than the true DEM after it); empty when the soak passed."""
    refs, adapting = references(adapt)
    context = multiprocessing.get_context("spawn")
    faults = {"second_server_refused": False, "replica_freezes": 0, "clients_killed": 0}
    server_args = FAST_START + (soak_adapt.server_args() if adapt else ())
    with local_server(extra_args=server_args) as (target, process), \
            local_server(extra_args=server_args) as (replica_target, replica), \
            _second_server(target) as second:
        probe = DecoderClient([target])
        for ref in refs:  # warm every model up before measuring memory
            probe.decode(ref.model, ref.events[:SHOTS_PER_MODEL], timeout=60)
        rss_start = _rss_mb(process.pid)
        p99_before = _p99_ms(probe, refs[0], min(2.0, seconds / 4))
        queue = context.Queue()
        workers = [context.Process(target=_client_loop, args=([target, replica_target], refs, seconds, seed + i, queue))
                   for i in range(clients)]
        for worker in workers:
            worker.start()
        time.sleep(min(2.0, seconds / 4))  # client processes start up
        killed_ref = next(r for r in refs if r.model == "transformer-d3")  # ~5 s for 65,536 shots
        chaos = threading.Thread(target=_faults, args=(target, replica, killed_ref, seconds, context, faults))
        chaos.start()
        p99_during = _p99_ms(probe, refs[0], max(1.0, seconds / 2))
        tallies = [queue.get(timeout=seconds + 120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        chaos.join()
        faults["second_server_refused"] = _refused(second)
        dead = _dead_models(target, probe, refs)
        with DecoderClient([replica_target]) as replica_probe:
            dead += [f"replica {name}" for name in _dead_models(replica_target, replica_probe, refs)]
        rss_end = _rss_mb(process.pid)
        recovered = soak_adapt.recovery(probe, adapting, seed + 1000) if adapt else {}
        probe.close()
    codes: collections.Counter = collections.Counter()
    run_errors = {model: [0, 0] for model in adapting}
    for tally in tallies:
        codes.update(tally["codes"])
        for model, (server_errors, nominal_errors) in tally["adapting_errors"].items():
            run_errors[model][0] += server_errors
            run_errors[model][1] += nominal_errors
    result = {
        "seconds": seconds, "clients": clients, "seed": seed, "models": [r.model for r in refs],
        "calls": sum(t["calls"] for t in tallies), "wrong_answers": sum(t["wrong"] for t in tallies),
        "dead_models": len(dead), "dead_model_names": dead, "status_codes": dict(codes),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": rss_end - rss_start,
        "matching_d5_p99_before_ms": p99_before, "matching_d5_p99_during_ms": p99_during,
        "machine": f"{platform.node()} ({platform.machine()})", **faults,
    }
    if adapt:
        result["adapt"] = {"server_args": list(soak_adapt.server_args()), "drift": dataclasses.asdict(soak_adapt.DRIFT),
                           "run_errors": {m: {"server": s, "nominal": n} for m, (s, n) in run_errors.items()},
                           "recovery": recovered}
    result["failures"] = [failure for failure, failed in (
        (f"{result['wrong_answers']} wrong answers", result["wrong_answers"]),
        (f"dead models: {', '.join(dead)}", dead),
        ("a second server started on the port in use", not faults["second_server_refused"])) if failed]
    result["failures"] += soak_adapt.failures(run_errors, recovered)
    table = Table(title=f"nqec bench soak: {seconds:g} s, {clients} client processes, two replicas on 127.0.0.1")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in (("calls", f"{result['calls']:,}"), ("wrong answers", str(result["wrong_answers"])),
                         ("dead models after the load", str(result["dead_models"])),
                         ("replica freezes / client processes killed mid-request",
                          f"{faults['replica_freezes']} / {faults['clients_killed']}"),
                         ("second server on the used port refused", "yes" if faults["second_server_refused"] else "NO"),
                         ("server RSS start -> end (MB)", f"{rss_start:,.0f} -> {rss_end:,.0f}"),
                         ("matching-d5 single-shot p99 before / during (ms)", f"{p99_before:.2f} / {p99_during:.2f}")):
        table.add_row(label, value)
    for model, (server_errors, nominal_errors) in run_errors.items():  # --adapt: the drifted device's models
        row = recovered[model]
        low, high = row["vs_true_dem"]["ratio_95"]
        table.add_row(f"{model} (adapting)", "")
        table.add_row("  errors over the run: server / nominal DEM", f"{server_errors} / {nominal_errors}")
        table.add_row("  afterwards, errors ÷ true DEM's (95%)", f"{row['vs_true_dem']['ratio']:.2f}x [{low:.2f}, {high:.2f}]")
        table.add_row("  the nominal DEM's ÷ true DEM's", f"{row['nominal_vs_true_dem']['ratio']:.2f}x")
    for code, count in sorted(codes.items(), key=lambda item: -item[1]):
        table.add_row(f"status {code}", f"{count:,}")
    return result, table
