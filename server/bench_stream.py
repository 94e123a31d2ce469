"""`nqec bench stream`: sliding-window decoding of long experiments, in process and over gRPC,
with windowed matching or windowed guided matching (``--decoder guided-matching --model M``).

Measures, per distance and experiment length: rounds/s of a block of experiments advancing
together (pushed slice by slice) and of one experiment alone whose rounds arrive in messages of
ROUNDS_PER_MESSAGE (in process, the compiled window loop; at the headline distance also against the
Python loop with a pymatching.Matching per window, pushed slice by slice, as before the loop was
compiled, in both matching modes), rounds/s of a RoundBlock stream and the
reaction time over gRPC on loopback (final slice sent -> answer received at the client, and
final slice received -> answer built at the server), the event data an open experiment holds
and the peak memory that decoding one experiment allocates. The accuracy check decodes the same shots windowed and
whole (one DEM for the whole experiment) in both matching modes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import queue
import time
import tracemalloc

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from decoder.bundle import Bundle
from decoder.errors import NqecError
from decoder.events import pack_bits
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec
from decoder.stats import per_round
from decoder.windowed import PyMatchingWindows, SlidingWindowDecoder
from decoder.windowed_guided import guided_windows
from server.bench import local_server
from server.client import DecoderClient
from server.generated import decoder_pb2 as pb2
from server.models import family_model_name, guided_family_model_name

ROUNDS = (10, 100, 1000, 10000)
ROUND_BUDGET = 200_000  # experiment-rounds per table cell: blocks shrink as experiments grow
HEADLINE_BLOCK, HEADLINE_ROUNDS = 1024, 1000
ROUNDS_PER_MESSAGE = 100  # a single experiment's rounds travel in messages of this many
SINGLE_EXPERIMENTS = 5  # the headline's single experiments, decoded one after another, share a quarter of the
# round budget (10,000 rounds each by default)
REACTION_SAMPLES = 50  # at least this many experiments per reaction-time percentile (their own, not the block's)
# Start measuring once every any-length model of the server is warm: the background build of the
# families not measured would otherwise share the CPU (and the server's GIL) with the measurement.
WAIT_FOR_EVERY_MODEL = True


def _slices(spec: CodeSpec, decoder: SlidingWindowDecoder, rounds: int, shots: int, seed: int) -> list[np.ndarray]:
    """Stim shots of a ``rounds``-round experiment, cut into time slices."""
    events = dataclasses.replace(spec, rounds=rounds).circuit().compile_detector_sampler(seed=seed).sample(shots)
    bounds = np.cumsum([0, *decoder.slice_sizes(rounds)])
    return [events[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def _inprocess_rounds_per_s(decoder: SlidingWindowDecoder, slices: list[np.ndarray]) -> float:
    start = time.perf_counter()
    stream = decoder.open(len(slices[0]))
    for events in slices[:-1]:
        stream.push(events)
    stream.finish(slices[-1])
    return len(slices[0]) * (len(slices) - 1) / (time.perf_counter() - start)


def _single_rounds_per_s(decoder: SlidingWindowDecoder, slices: list[np.ndarray], reference: bool = False) -> float:
    """Rounds/s of the experiments of ``slices`` decoded one at a time, each alone: its rounds pushed in
    messages of ROUNDS_PER_MESSAGE (``push_slices``; a message is one array, made before the clock starts),
    or, for the ``reference``, slice by slice through the Python loop with a pymatching.Matching per window."""
    rounds = len(slices) - 1
    experiments = []
    for shot in range(len(slices[0])):
        rows = [events[shot: shot + 1] for events in slices]
        messages = [(np.concatenate(rows[first: min(first + ROUNDS_PER_MESSAGE, rounds)], axis=1),
                     min(ROUNDS_PER_MESSAGE, rounds - first)) for first in range(0, rounds, ROUNDS_PER_MESSAGE)]
        experiments.append((rows, messages))
    start = time.perf_counter()
    for rows, messages in experiments:
        if reference:
            stream = PyMatchingWindows(decoder, 1)
            for events in rows[:-1]:
                stream.push(events)
        else:
            stream = decoder.open(1)
            for events, count in messages:
                stream.push_slices(events, count)
        stream.finish(rows[-1])
    return len(experiments) * rounds / (time.perf_counter() - start)


def _single_headline(streamed: "StreamedDecoder", spec: CodeSpec, decoder: SlidingWindowDecoder, seed: int,
                     rounds: int) -> dict:
    """One experiment alone at the headline distance, in each matching mode: the compiled loop (rounds in
    messages) and, for matching, the Python loop it replaced (slice by slice), on the same experiments."""
    slices = _slices(spec, decoder, rounds, SINGLE_EXPERIMENTS, seed + 1)
    result = {"single_rounds_arrive": f"{SINGLE_EXPERIMENTS} experiments of {rounds:,} rounds, decoded one "
                                      f"at a time, each alone, in process; its rounds pushed in messages of "
                                      f"{ROUNDS_PER_MESSAGE} rounds (push_slices: the compiled window loop). "
                                      "Python loop: the same experiments pushed slice by slice, each window matched "
                                      "by a pymatching.Matching (windowed matching before its loop was compiled)"}
    modes = (("", decoder),)
    if streamed.bundle is None:
        modes += (("correlated_", streamed.windowed(spec, correlations=True).prepare()),)
    warm = [s[:1] for s in slices]  # one experiment first: every window it needs is built before the clock starts
    for prefix, windowed in modes:
        _single_rounds_per_s(windowed, warm)
        compiled = _single_rounds_per_s(windowed, slices)
        result[f"single_{prefix}rounds_per_s"] = compiled
        if streamed.bundle is None:
            _single_rounds_per_s(windowed, warm, reference=True)  # and the reference's pymatching.Matching per window
            python = _single_rounds_per_s(windowed, slices, reference=True)
            result[f"single_{prefix}python_loop_rounds_per_s"] = python
            result[f"single_{prefix}speedup"] = compiled / python
    return result


def _versus_python_loop(result: dict) -> str:
    if result.get("single_speedup") is None:
        return ""
    return f", {result['single_speedup']:.1f}x the Python loop's {result['single_python_loop_rounds_per_s']:,.0f}"


def _memory_bytes(decoder: SlidingWindowDecoder, slices: list[np.ndarray]) -> tuple[int, int]:
    """``(held, peak)`` bytes of one experiment decoded slice by slice: the event data the open
    experiment holds just before its final slice (``held_bytes``), and the transient peak of
    Python allocations on the way (tracemalloc). The window graphs, shared by all experiments,
    are built beforehand."""
    tracemalloc.start()
    stream = decoder.open(1)
    for index in range(len(slices) - 1):  # no copy of the list inside the measurement
        stream.push(slices[index][:1])
    held, (_, peak) = stream.held_bytes, tracemalloc.get_traced_memory()
    stream.finish(slices[-1][:1])
    tracemalloc.stop()
    return held, peak


def _grpc_block_rounds_per_s(client: DecoderClient, model: str, slices: list[np.ndarray]) -> float:
    experiments = len(slices[0])
    requests = (pb2.StreamRequest(blocks=[pb2.RoundBlock(
        block_id="b", model=model if i == 0 else "", num_experiments=experiments,
        events=pack_bits(events).tobytes(), last=i == len(slices) - 1)]) for i, events in enumerate(slices))
    start = time.perf_counter()
    for response in client.stub().DecodeStream(requests, timeout=600):
        if any(block.error for block in response.blocks):
            raise RuntimeError(response.blocks[0].error)
    return experiments * (len(slices) - 1) / (time.perf_counter() - start)


def _reaction_ms(client: DecoderClient, model: str, decoder: SlidingWindowDecoder, slices: list[np.ndarray],
                 experiments: int) -> tuple[list[float], list[float]]:
    """Per experiment: ms from sending its final slice to receiving its answer (the client's round
    trip), and ms the server spent from receiving that slice to building the answer (the answer's
    ``decode_seconds``). One stream, one
    experiment at a time; the earlier rounds go ahead in messages of ROUNDS_PER_MESSAGE, and the
    final slice is sent once the server has committed every window before it (its streamed
    corrections say so), so the time is the final window's alone, as on a device that keeps pace."""
    rounds = len(slices) - 1
    held = decoder.span + decoder.lookahead  # slices buffered when a window is decoded
    windows_before_final = len(range(0, rounds - held + 1, decoder.commit)) if rounds >= held else 0
    outbox: queue.Queue = queue.Queue()
    responses = client.stub().DecodeStream(iter(outbox.get, None), timeout=600)
    times, server = [], []
    for shot in range(experiments):
        rows = [pack_bits(events[shot: shot + 1])[0].tobytes() for events in slices]
        body = [pb2.Round(experiment_id=f"e{shot}", model=model if i == 0 else "", events=data,
                          stream_corrections=i == 0) for i, data in enumerate(rows[:-1])]
        for start in range(0, len(body), ROUNDS_PER_MESSAGE):
            outbox.put(pb2.StreamRequest(rounds=body[start: start + ROUNDS_PER_MESSAGE]))
        committed = 0  # slices the streamed corrections say are committed (one correction per message)
        while committed < windows_before_final * decoder.commit:
            committed = max([committed] + [r.rounds_committed for r in next(responses).results if r.partial])
        sent = time.perf_counter()
        outbox.put(pb2.StreamRequest(rounds=[pb2.Round(experiment_id=f"e{shot}", events=rows[-1], last=True)]))
        answer = next(responses)
        times.append((time.perf_counter() - sent) * 1e3)
        server.append(answer.results[0].decode_seconds * 1e3)
        if answer.results[0].error or answer.results[0].partial:
            raise RuntimeError(f"expected the final answer, got {answer.results[0]}")
    outbox.put(None)
    return times, server


@dataclasses.dataclass(frozen=True)
class StreamedDecoder:
    """Which windowed decoder a stream bench measures: its in-process form per family, its served
    name, and the whole-experiment decoders its windows are checked against."""

    decoder: str = "matching"  # or "guided-matching"
    model: str | None = None  # the pre-decoder bundle of guided matching

    def __post_init__(self):
        if self.decoder not in ("matching", "guided-matching"):
            raise NqecError(f"bench stream measures matching or guided-matching, not {self.decoder!r}")
        if (self.decoder == "guided-matching") != (self.model is not None):
            raise NqecError("bench stream: --model names the pre-decoder of --decoder guided-matching (and only it)")

    @functools.cached_property
    def bundle(self):
        return Bundle.load(self.model) if self.model else None

    def windowed(self, spec: CodeSpec, correlations: bool = False) -> SlidingWindowDecoder:
        if self.bundle is None:
            return SlidingWindowDecoder(spec, correlations=correlations)
        return guided_windows(self.bundle, spec)

    def served_name(self, spec: CodeSpec) -> str:
        return family_model_name(spec) if self.bundle is None else guided_family_model_name(self.bundle.name, spec)

    def modes(self) -> tuple[tuple[str, bool], ...]:
        """The accuracy check's modes: both for matching; guided matching's calibrated one."""
        if self.bundle is None:
            return ("uncorrelated", False), ("correlated", True)
        correlated = self.windowed(CodeSpec(3, 3, 0.001)).correlations
        return (("correlated", True),) if correlated else (("uncorrelated", False),)

    def whole(self, spec: CodeSpec, correlations: bool):
        if self.bundle is None:
            return MatchingDecoder.from_spec(spec, correlations=correlations)
        return self.bundle.decoder(spec, pipeline="guided-matching")


def window_ler_check(spec: CodeSpec, rounds: int, shots: int, seed: int,
                     streamed: StreamedDecoder = StreamedDecoder()) -> dict:
    """LER per round of windowed vs whole-experiment decoding on the same shots (both matching
    modes; guided matching in its calibrated mode, with both PyMatching modes on the whole experiments)."""
    long = dataclasses.replace(spec, rounds=rounds)
    events, observables = long.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    result = {"rounds": rounds, "shots": shots, "seed": seed}

    def errors_per_round(predictions) -> tuple[int, float]:
        count = int(np.any(predictions != observables, axis=1).sum())
        return count, per_round(count / shots, rounds)

    for mode, correlations in streamed.modes():
        (windowed, windowed_rate), (whole, whole_rate) = (
            errors_per_round(streamed.windowed(spec, correlations).decode_batch(events, rounds)),
            errors_per_round(streamed.whole(long, correlations).decode_batch(events)))
        result[mode] = {"windowed_errors": windowed, "whole_errors": whole,
                        "windowed_ler_per_round": windowed_rate, "whole_ler_per_round": whole_rate,
                        "ratio": windowed_rate / whole_rate if whole_rate else None}
        if streamed.bundle is not None:
            for name, pymatching_correlations in (("matching", False), ("matching-correlated", True)):
                count, rate = errors_per_round(MatchingDecoder.from_spec(long, correlations=pymatching_correlations)
                                               .decode_batch(events))
                result[mode][f"{name}_whole_errors"] = count
                result[mode][f"windowed_vs_{name}_whole"] = windowed_rate / rate if rate else None
    return result


def bench_stream(distances: tuple[int, ...], p: float, seed: int = 0, ler_shots: int = 20_000,
                 headline_distance: int = 5, streamed: StreamedDecoder = StreamedDecoder(),
                 round_budget: int = ROUND_BUDGET) -> tuple[dict, Group]:
    """The table over ``distances`` x ROUNDS (at most ``round_budget`` experiment-rounds a cell), the
    headline figures at ``headline_distance`` and the accuracy check; returns the JSON-ready result
    and its table (:func:`stream_table`)."""
    rows = []
    headline = {}
    load = os.getloadavg()[0]  # other work on the machine, as the run starts
    measured = tuple(streamed.served_name(CodeSpec(d, d, p)) for d in distances)
    with local_server(ready=None if WAIT_FOR_EVERY_MODEL else measured) as (target, _):
        client = DecoderClient([target])
        for d in distances:
            spec = CodeSpec(d, d, p)
            decoder = streamed.windowed(spec).prepare()
            model = streamed.served_name(spec)
            warm = _slices(spec, decoder, 3 * decoder.span, 8, seed)
            _inprocess_rounds_per_s(decoder, warm)  # builds the window graphs
            _reaction_ms(client, model, decoder, warm, 2)
            for rounds in ROUNDS:
                block = max(1, min(HEADLINE_BLOCK, round_budget // rounds))
                slices = _slices(spec, decoder, rounds, block, seed + rounds)
                samples = max(REACTION_SAMPLES, 2000 // rounds)  # a long experiment's block is a few experiments
                reactions, server = _reaction_ms(client, model, decoder,
                                                 _slices(spec, decoder, rounds, samples, seed + rounds + 1), samples)
                rows.append({"distance": d, "rounds": rounds, "block": block,
                             "rounds_per_s": _inprocess_rounds_per_s(decoder, slices),
                             "single_rounds_per_s": _single_rounds_per_s(  # ~10,000 rounds of experiments, each alone
                                 decoder, [s[:max(1, 10_000 // rounds)] for s in slices]),
                             "grpc_rounds_per_s": _grpc_block_rounds_per_s(client, model, slices),
                             "reaction_samples": samples,
                             "reaction_p50_ms": float(np.percentile(reactions, 50)),
                             "reaction_p99_ms": float(np.percentile(reactions, 99)),
                             "server_reaction_p50_ms": float(np.percentile(server, 50)),
                             "server_reaction_p99_ms": float(np.percentile(server, 99)),
                             **dict(zip(("held_memory_bytes", "peak_memory_bytes"), _memory_bytes(decoder, slices)))})
            if d == headline_distance:
                slices = _slices(spec, decoder, HEADLINE_ROUNDS, HEADLINE_BLOCK, seed)
                reactions, server = _reaction_ms(client, model, decoder, _slices(spec, decoder, 10, 200, seed + 2), 200)
                headline = {"rounds_per_s": _inprocess_rounds_per_s(decoder, slices),
                            **_single_headline(streamed, spec, decoder, seed,
                                               max(1, round_budget // (4 * SINGLE_EXPERIMENTS))),
                            "reaction_p50_ms": float(np.percentile(reactions, 50)),
                            "reaction_p99_ms": float(np.percentile(reactions, 99)),
                            "server_reaction_p99_ms": float(np.percentile(server, 99))}
        client.close()
    by_rounds = {row["rounds"]: row for row in rows if row["distance"] == headline_distance}
    check = window_ler_check(CodeSpec(headline_distance, headline_distance, p), 100, ler_shots, seed, streamed)
    modes = [mode for mode, _ in streamed.modes()]
    result = {
        "decoder": decoder.name, "model": streamed.model, "distance": headline_distance, "p": p, "seed": seed,
        **headline, "window_ler_ratio": check[modes[0]]["ratio"],
        "window_ler_ratio_correlated": check["correlated"]["ratio"] if "correlated" in check else None,
        "window_ler_check": check,
        **{f"{prefix}reaction_p99_10000_vs_10_rounds": (
            by_rounds[10000][f"{prefix}reaction_p99_ms"] / by_rounds[10][f"{prefix}reaction_p99_ms"]
            if {10, 10000} <= set(by_rounds) else None) for prefix in ("", "server_")},
        "memory_10000_vs_100_rounds": (by_rounds[10000]["held_memory_bytes"] / by_rounds[100]["held_memory_bytes"]
                                       if {100, 10000} <= set(by_rounds) else None),
        "table": rows,
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores; load average {load:.1f} as "
                   "the run started), one process per side",
    }
    return result, stream_table(result)


def _thousands(rate: float) -> str:
    """A rate in at most 7 characters: 12, 86.8k, 1,810k."""
    return f"{rate:.0f}" if rate < 1e3 else f"{rate / 1e3:.1f}k" if rate < 1e5 else f"{rate / 1e3:,.0f}k"


def _percentiles(p50: float, p99: float) -> str:
    """Two times in ms in at most 11 characters: 0.95/1.29, 12.2/104, 9999/99.5k."""
    def short(ms: float) -> str:
        for digits, below in ((2, 10), (1, 100), (0, 10_000)):
            if round(ms, digits) < below:
                return f"{ms:.{digits}f}"
        return f"{ms / 1e3:.1f}k" if round(ms / 1e3, 1) < 100 else f"{ms / 1e3:.0f}k"
    return f"{short(p50)}/{short(p99)}"


def stream_table(result: dict) -> Group:
    """The bench's table (80 columns wide) and what its columns mean, from its JSON result."""
    model = f" ({result['model']})" if result.get("model") else ""
    table = Table(title=f"nqec bench stream: {result['decoder']}{model}, p={result['p']:g}", box=box.SIMPLE_HEAD,
                  show_edge=False, collapse_padding=True)
    widths = {"d": 2, "rounds": 6, "block": 5, "block r/s": 7, "one r/s": 7, "gRPC r/s": 7, "reaction ms": 11,
              "server ms": 11, "held KB": 7}  # 80 columns in all
    for column, width in widths.items():
        table.add_column(column, justify="right", width=width)
    for row in result["table"]:
        table.add_row(str(row["distance"]), f"{row['rounds']:,}", f"{row['block']:,}", _thousands(row["rounds_per_s"]),
                      _thousands(row["single_rounds_per_s"]), _thousands(row["grpc_rounds_per_s"]),
                      _percentiles(row["reaction_p50_ms"], row["reaction_p99_ms"]),
                      _percentiles(row["server_reaction_p50_ms"], row["server_reaction_p99_ms"]),
                      f"{row['held_memory_bytes'] / 1024:.1f}")
    check = result["window_ler_check"]
    modes = [mode for mode in ("uncorrelated", "correlated") if mode in check]
    checks = "; ".join(f"{mode} {check[mode]['ratio']:.3f} ({check[mode]['windowed_errors']} vs "
                       f"{check[mode]['whole_errors']} errors)" for mode in modes)
    notes = ("Windows commit d rounds and buffer d. rounds/s of a block in process, of one experiment alone, "
             "of the block over gRPC; reaction (final slice sent -> answer) and the server's part of it: p50/p99 ms "
             f"over at least {REACTION_SAMPLES} experiments; held: event data of one open experiment (JSON: peak). "
             f"d={result['distance']}: {result.get('rounds_per_s', 0):,.0f} rounds/s (block of {HEADLINE_BLOCK}, "
             f"{HEADLINE_ROUNDS} rounds), one experiment {result.get('single_rounds_per_s', 0):,.0f} "
             f"(messages of {ROUNDS_PER_MESSAGE} rounds{_versus_python_loop(result)}); "
             f"windowed/whole-experiment LER per round at r=100 on {check['shots']:,} shots: {checks}")
    return Group(table, Text(notes))
