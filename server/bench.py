"""`nqec bench server`: gRPC latency and throughput against in-process decoding of the same shots.

Load goes to loopback only, is bounded in time, and stops by itself. Unless given a target,
the benchmark starts its own server in a subprocess (its own interpreter, as in production).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import platform
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from decoder.bundle import Bundle
from decoder.registry import build_decoder
from decoder.spec import CodeSpec
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2

BATCH = 1024
OVERHEAD_BATCHES = (1024, 4096)
STREAM_EXPERIMENTS = 512


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(timeout: float = 180.0, extra_args: tuple[str, ...] = (), ready: tuple[str, ...] | None = None):
    """Run ``nqec serve`` in a subprocess on a free loopback port; yields ``(host:port, process)``
    once the server and each model named in ``ready`` is SERVING (default: every model, so a
    benchmark never measures the any-length models' warm-up after start)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nqec", "serve", "--port", str(port), *extra_args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, timeout, process)
        if ready is None:
            with contextlib.closing(DecoderClient([target])) as client:
                ready = tuple(info.name for info in client.list_models() if info.any_length)
        wait_until_serving(target, timeout, process, ready)
        yield target, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # stopped (SIGSTOP) or stuck: never leave it running
            process.kill()
            process.wait()


def wait_until_serving(target: str, timeout: float, process: subprocess.Popen | None = None,
                       services: tuple[str, ...] = ("",)) -> None:
    """Wait until health says SERVING for each of ``services`` ("" = the server) at ``target``."""
    deadline = time.monotonic() + timeout
    waiting = list(services)
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(grpc.RpcError):
                while waiting and stub.Check(health_pb2.HealthCheckRequest(service=waiting[0]), timeout=1).status \
                        == health_pb2.HealthCheckResponse.SERVING:
                    waiting.pop(0)
            if not waiting:
                return
            time.sleep(0.2)
    raise TimeoutError(f"{target} did not report {waiting[0] or 'the server'} SERVING within {timeout:.0f} s")


def _percentiles_ms(samples: list[float]) -> dict:
    p50, p99, p999 = np.percentile(np.array(samples) * 1e3, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999)}


def _inprocess(decoder, events: np.ndarray, seconds: float) -> dict:
    """In-process shots/s at batch 1024 and single-shot latency, same shots."""
    times, shots, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        offset = (shots // BATCH * BATCH) % (len(events) - BATCH)
        t = time.perf_counter()
        decoder.decode_batch(events[offset: offset + BATCH])
        times.append(time.perf_counter() - t)
        shots += BATCH
    single = []
    for row in range(min(2000, len(events))):
        t = time.perf_counter()
        decoder.decode_batch(events[row: row + 1])
        single.append(time.perf_counter() - t)
    return {"shots_per_s": BATCH / float(np.mean(times)), "single": _percentiles_ms(single)}


def _unary_latency(client: DecoderClient, model: str, events: np.ndarray, seconds: float) -> list[float]:
    samples, start, row = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        client.decode(model, events[row: row + 1], timeout=5)
        samples.append(time.perf_counter() - t)
        row = (row + 1) % len(events)
    return samples


def interleaved_traffic(target: str, model: str, seconds: float, rate: float, seed: int = 1) -> None:
    """Single-shot calls to ``model`` at ``rate`` calls/s for ``seconds`` (runs in its own process:
    the traffic that ``bench server --interleave`` puts beside the measured model)."""
    client = DecoderClient([target])
    info = client.model_info(model)
    spec = CodeSpec(info.distance, info.rounds, info.p, info.basis, info.noise)
    events = spec.circuit().compile_detector_sampler(seed=seed).sample(1000, bit_packed=True)
    start = time.perf_counter()
    for call in range(int(seconds * rate)):
        time.sleep(max(0.0, start + call / rate - time.perf_counter()))
        client.decode(model, events[call % len(events)][None], timeout=5)
    client.close()


def _latency_beside(client: DecoderClient, model: str, events: np.ndarray, seconds: float, target: str,
                    other: str, rate: float) -> list[float]:
    """Single-shot latencies of ``model`` while another process sends single shots to ``other``."""
    process = multiprocessing.get_context("spawn").Process(target=interleaved_traffic,
                                                           args=(target, other, seconds + 3.0, rate))
    process.start()
    try:
        time.sleep(2.0)  # the other process is up and calling
        return _unary_latency(client, model, events, seconds)
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()


def _paired_batch_seconds(client: DecoderClient, model: str, decoder, events: np.ndarray, batch: int,
                          seconds: float) -> tuple[float, float]:
    """Mean seconds per ``batch``-shot call in-process and over gRPC, alternating call by call on
    the same shots so both see the same machine state."""
    local, remote, offset, stop = [], [], 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        shots = events[offset % (len(events) - batch):][:batch]
        offset += batch
        t = time.perf_counter()
        decoder.decode_batch(shots)
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.decode(model, shots, timeout=10)
        remote.append(time.perf_counter() - t)
    return float(np.mean(local)), float(np.mean(remote))


def _sustained(client: DecoderClient, model: str, events: np.ndarray, seconds: float, clients: int) -> tuple[float, list[float]]:
    """Shots/s with ``clients`` threads sending 1024-shot requests; also each call's round-trip time."""
    counts, round_trips, stop = [0] * clients, [], time.perf_counter() + seconds

    def worker(index: int) -> None:
        offset = index * BATCH
        while time.perf_counter() < stop:
            t = time.perf_counter()
            client.decode(model, events[offset % (len(events) - BATCH):][:BATCH], timeout=10)
            round_trips.append(time.perf_counter() - t)
            counts[index] += BATCH
            offset += clients * BATCH

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start), round_trips


def _streaming(client: DecoderClient, model: str, events: np.ndarray, info, seconds: float) -> float:
    """Shots/s over one DecodeStream; each message carries one round of a block of 512 experiments."""
    bounds = np.cumsum([0] + list(info.detectors_per_round))
    bits = np.unpackbits(events, axis=1, count=info.num_detectors, bitorder="little").astype(bool)
    stop = time.perf_counter() + seconds
    answered = [0]

    def requests():
        block = 0
        while time.perf_counter() < stop:
            rows = np.arange(block * STREAM_EXPERIMENTS, (block + 1) * STREAM_EXPERIMENTS) % len(bits)
            for r, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                yield pb2.StreamRequest(blocks=[pb2.RoundBlock(
                    block_id=str(block), model=model, num_experiments=len(rows), last=r == len(bounds) - 2,
                    events=np.packbits(bits[rows, lo:hi], axis=1, bitorder="little").tobytes())])
            block += 1

    start = time.perf_counter()
    for response in client.stub().DecodeStream(requests(), metadata=client.metadata, timeout=seconds + 60):
        answered[0] += sum(len(block.stages) for block in response.blocks)
    return answered[0] / (time.perf_counter() - start)


def bench_server(model: str, spec: CodeSpec, target: str | None = None, seconds: float = 3.0, clients: int = 4,
                 seed: int = 0, shots: int = 65_536, interleave: str | None = None,
                 interleave_rate: float = 1000.0) -> tuple[dict, Table]:
    """Measure unary latency, sustained and streaming throughput, and in-process baselines;
    with ``interleave`` (a served model), also ``model``'s single-shot latency while another
    process sends ``interleave_rate`` single shots per second to that model (how much the two
    slow each other; a fixed rate, so that the two client processes do not take the cores)."""
    events, _ = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True, bit_packed=True)
    with (contextlib.nullcontext((target, None)) if target else local_server()) as (address, _):
        client = DecoderClient([address])
        info = client.model_info(model)
        decoder = build_decoder(info.decoder, spec) if info.kind == "matching" else Bundle.load(model).decoder(spec)
        inprocess = _inprocess(decoder, events, seconds)
        client.decode(model, events[:BATCH])  # warm up
        latency = _percentiles_ms(_unary_latency(client, model, events, seconds))
        beside = None if interleave is None else _percentiles_ms(
            _latency_beside(client, model, events, seconds, address, interleave, interleave_rate))
        paired = {batch: _paired_batch_seconds(client, model, decoder, events, batch, seconds)
                  for batch in OVERHEAD_BATCHES}
        sustained, _ = _sustained(client, model, events, seconds, clients)
        streaming = _streaming(client, model, events, info, seconds) if info.detectors_per_round else None
        client.close()
    result = {
        "model": model, "spec": spec.to_dict(), "machine": f"{platform.node()} ({platform.machine()})",
        "server": target or "subprocess on 127.0.0.1", "seconds_per_phase": seconds, "clients": clients, "seed": seed,
        "unary_p50_ms": latency["p50"], "unary_p99_ms": latency["p99"], "unary_p999_ms": latency["p999"],
        "inprocess_single_p50_ms": inprocess["single"]["p50"], "inprocess_single_p99_ms": inprocess["single"]["p99"],
        "interleaved_with": interleave, "interleave_calls_per_s": interleave_rate if interleave else None,
        "unary_interleaved_p50_ms": None if beside is None else beside["p50"],
        "unary_interleaved_p99_ms": None if beside is None else beside["p99"],
        "interleaved_p99_ratio": None if beside is None else beside["p99"] / latency["p99"],
        "sustained_shots_per_s": sustained, "stream_shots_per_s": streaming,
        "inprocess_shots_per_s": inprocess["shots_per_s"],
        "sustained_vs_inprocess": sustained / inprocess["shots_per_s"],
        "stream_vs_inprocess": None if streaming is None else streaming / inprocess["shots_per_s"],
        **{f"grpc_overhead_batch{batch}": remote / local for batch, (local, remote) in paired.items()},
        **{f"batch{batch}_ms": {"grpc": remote * 1e3, "inprocess": local * 1e3} for batch, (local, remote) in paired.items()},
    }
    table = Table(title=f"nqec bench server: {model} ({spec.label()})")
    for column in ("measure", "gRPC", "in-process", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("single shot p50 / p99 / p99.9 (ms)",
                  f"{latency['p50']:.3f} / {latency['p99']:.3f} / {latency['p999']:.3f}",
                  f"{inprocess['single']['p50']:.3f} / {inprocess['single']['p99']:.3f}", "")
    if beside is not None:
        table.add_row(f"  beside {interleave_rate:g}/s {interleave} calls", f"{beside['p50']:.3f} / {beside['p99']:.3f} / "
                      f"{beside['p999']:.3f}", "", f"p99 {result['interleaved_p99_ratio']:.2f}x")
    for batch, (local, remote) in paired.items():
        table.add_row(f"time per {batch}-shot call (ms)", f"{remote * 1e3:.2f}", f"{local * 1e3:.2f}",
                      f"{remote / local:.2f}x")
    table.add_row(f"sustained unary, {clients} clients (shots/s)", f"{sustained:,.0f}",
                  f"{inprocess['shots_per_s']:,.0f}", f"{result['sustained_vs_inprocess']:.2f}")
    if streaming is not None:
        table.add_row(f"DecodeStream, blocks of {STREAM_EXPERIMENTS} (shots/s)", f"{streaming:,.0f}", f"{inprocess['shots_per_s']:,.0f}",
                      f"{result['stream_vs_inprocess']:.2f}")
    return result, table
