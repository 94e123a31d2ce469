"""`nqec bench memory`: the server's resident memory once ready and after one pass over every model.

The server runs in its own process (``nqec serve`` on loopback, as in production); its RSS is read
from /proc. One pass: a Decode of ``shots`` shots for every fixed-length model at its own spec,
and one DecodeStream block for every any-length model (experiments long enough to use its
first, bulk and final windows). Answers are only required to come (the soak checks them).
"""

from __future__ import annotations

import platform
import time

import numpy as np
from rich.table import Table

from decoder.events import pack_bits
from decoder.spec import CodeSpec
from server.bench import local_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2


def resident_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _spec(info) -> CodeSpec:
    return CodeSpec(info.distance, max(info.rounds, 1), info.p, info.basis, info.noise)


def _stream_once(client: DecoderClient, info, experiments: int, seed: int) -> None:
    """One block of experiments through an any-length model: first, bulk and final windows."""
    rounds = 2 * (info.window_commit + info.window_buffer) + 1
    spec = CodeSpec(info.distance, rounds, info.p, info.basis, info.noise)
    bits = spec.circuit().compile_detector_sampler(seed=seed).sample(experiments)
    first, bulk, final = info.detectors_per_round
    bounds = np.cumsum([0, first, *[bulk] * (rounds - 1), final])
    requests = [pb2.StreamRequest(blocks=[pb2.RoundBlock(block_id="b", model=info.name, num_experiments=experiments,
                                                         events=pack_bits(bits[:, lo:hi]).tobytes(),
                                                         last=hi == bounds[-1])])
                for lo, hi in zip(bounds[:-1], bounds[1:])]
    answers = [b for response in client.stub().DecodeStream(iter(requests), timeout=120) for b in response.blocks]
    if not answers or answers[-1].error:
        raise RuntimeError(f"{info.name}: {answers[-1].error if answers else 'no answer'}")


def bench_memory(shots: int = 4096, experiments: int = 64, seed: int = 0) -> tuple[dict, Table]:
    """Start a server, measure its RSS when every model is ready and after one pass over all of them."""
    with local_server() as (target, process):
        ready_mib = resident_mib(process.pid)
        client = DecoderClient([target])
        seconds = {}
        for info in client.list_models():
            start = time.perf_counter()
            if info.any_length:
                _stream_once(client, info, experiments, seed)
            else:
                events = _spec(info).circuit().compile_detector_sampler(seed=seed).sample(shots, bit_packed=True)
                client.decode(info.name, events, timeout=600)
            seconds[info.name] = time.perf_counter() - start
        after_mib = resident_mib(process.pid)
        client.close()
    result = {"machine": f"{platform.node()} ({platform.machine()})", "models": len(seconds),
              "shots_per_fixed_length_model": shots, "experiments_per_any_length_model": experiments, "seed": seed,
              "rss_ready_mib": ready_mib, "rss_after_pass_mib": after_mib, "pass_seconds": seconds}
    table = Table(title=f"nqec bench memory: server RSS, {len(seconds)} models")
    table.add_column("when")
    table.add_column("RSS (MiB)", justify="right")
    table.add_row("every model ready (any-length graphs built)", f"{ready_mib:,.0f}")
    table.add_row(f"after one pass ({shots:,} shots or {experiments} streamed experiments each)", f"{after_mib:,.0f}")
    return result, table
