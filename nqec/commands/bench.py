"""``nqec bench``: data streams, inference runtimes, decoding pipelines, the server, streams, soak, drift."""

from __future__ import annotations

import argparse

from nqec.commands.common import add_experiment_args, emit, experiment, experiments, int_list, positive_int
from nqec.commands.noise import add_drift_args


def cmd_bench_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_data import bench_data
    from training.report import command_line

    spec = experiment(args)
    result = bench_data(spec, args.batch, args.batches, args.seed)
    result["command"] = command_line()
    table = Table(title=f"nqec bench data ({spec.label()}, batch {args.batch})")
    for column in ("stream", "nqec samples/s", "stim raw samples/s", "ratio"):
        table.add_column(column, justify="right")
    for name, row in result["streams"].items():
        table.add_row(name, f"{row['stream_samples_per_s']:,.0f}", f"{row['stim_samples_per_s']:,.0f}", f"{row['ratio']:.3f}")
    emit(table, result, args.json)
    return 0


def cmd_bench_inference(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_inference import BATCHES, bench_inference
    from training.report import command_line

    result = bench_inference(args.model, args.seconds, args.parity_shots, args.seed)
    result["command"] = command_line()
    table = Table(title=f"nqec bench inference: {result['model']} ({result['machine']})")
    for column in ("runtime", *[f"batch {b} shots/s" for b in BATCHES], "batch 1 p50 ms", "batch 1 p99 ms"):
        table.add_column(column, justify="right")
    for runtime, row in result["runtimes"].items():
        table.add_row(runtime, *[f"{row[f'batch{b}_shots_per_s']:,.0f}" for b in BATCHES],
                      f"{row['batch1_p50_ms']:.3f}", f"{row['batch1_p99_ms']:.3f}")
    ratio = result["onnx_vs_torch"]
    table.add_row("onnxruntime / torch", *[f"{ratio[f'batch{b}_shots_per_s']:.2f}x" for b in BATCHES],
                  f"{ratio['batch1_p50_ms']:.2f}x", f"{ratio['batch1_p99_ms']:.2f}x")
    parity = result["parity"]
    table.caption = (f"parity on {parity['shots']} shots: max |onnx - torch| = {parity['max_abs_diff']:.2e}, "
                     f"identical decisions: {parity['identical_decisions']}")
    emit(table, result, args.json)
    return 0


def cmd_bench_decode(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_decode import bench_decode
    from training.report import command_line

    result = bench_decode(args.decoder, args.model, experiments(args), args.shots, args.seconds, args.seed)
    result["command"] = command_line()
    name = args.decoder + (f" ({args.model})" if args.model else "")
    table = Table(title=f"nqec bench decode: {name}, shots/s on {args.shots:,} shots per point ({result['machine']})")
    for column in ("experiment", "pipeline", "matching", "correlated", "vs matching", "vs correlated"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(row["experiment"], f"{row['shots_per_s']:,.0f}",
                      f"{row['matching_shots_per_s']:,.0f}", f"{row['correlated_shots_per_s']:,.0f}",
                      f"{row['vs_matching']:.3f}x", f"{row['vs_correlated']:.3f}x")
    emit(table, result, args.json)
    return 0


def cmd_bench_server(args: argparse.Namespace) -> int:
    from nqec.commands.client import served_model_name
    from server.bench import bench_server
    from training.report import command_line

    spec = experiment(args)
    result, table = bench_server(served_model_name(args.model, spec), spec, target=args.target, seconds=args.seconds,
                                 clients=args.clients, seed=args.seed, interleave=args.interleave,
                                 interleave_rate=args.interleave_rate)
    result["command"] = command_line()
    emit(table, result, args.json)
    return 0


def cmd_bench_memory(args: argparse.Namespace) -> int:
    from server.bench_memory import bench_memory
    from training.report import command_line

    result, table = bench_memory(shots=args.shots, experiments=args.experiments, seed=args.seed)
    result["command"] = command_line()
    emit(table, result, args.json)
    return 0


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from server.bench_stream import ROUND_BUDGET, StreamedDecoder, bench_stream
    from training.report import command_line

    streamed = StreamedDecoder(args.decoder, args.model)
    budget = args.round_budget or (ROUND_BUDGET if args.decoder == "matching" else ROUND_BUDGET // 10)
    result, table = bench_stream(tuple(args.distance), args.p, args.seed, args.ler_shots, args.distance[0],
                                 streamed, budget)
    result["command"] = command_line()
    emit(table, result, args.json)
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from server.soak import soak
    from training.report import command_line

    result, table = soak(args.seconds, args.clients, args.seed, adapt=args.adapt)
    result["command"] = command_line()
    emit(table, result, args.json)
    return 0 if result["wrong_answers"] == 0 and result["dead_models"] == 0 and not result["failures"] else 1


def cmd_bench_drift(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nqec.commands.noise import drift_of
    from training.bench_drift import DriftRun, bench_drift
    from training.report import command_line

    spec = experiment(args)
    run = DriftRun(tuple(args.segments), tuple(bool(f) for f in args.drifted), args.window, args.half_life,
                   args.matching == "correlated")
    result = bench_drift(spec, drift_of(args), run, seed=args.seed)
    result["command"] = command_line()
    table = Table(title=f"{spec.label()}: {args.drift} {args.strength:g} appears and fades; "
                        f"adaptive re-estimates every {args.window:,} shots (half-life {args.half_life:,})")
    for column in ("segment", "drift", "static", "adaptive", "true DEM", "recovered after"):
        table.add_column(column, justify="right")
    for index, segment in enumerate(result["segments"]):
        rates = [f"{segment['decoders'][n]['ler']:.2e}" for n in ("static", "adaptive", "true")]
        recovered = segment["recovered_after_shots"]
        table.add_row(str(index), "on" if segment["drifted"] else "off", *rates,
                      "-" if index == 0 else f"{recovered:,}" if recovered else "never")
    emit(table, result, args.json)
    return 0


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    data = benches.add_parser("data", help="training-stream samples/s vs Stim's raw sampler")
    add_experiment_args(data, sweep=False)
    data.add_argument("--batch", type=positive_int, default=1024)
    data.add_argument("--batches", type=positive_int, default=200)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--json", default=None)
    data.set_defaults(func=cmd_bench_data)

    inference = benches.add_parser("inference", help="onnxruntime vs torch shots/s and latency for a bundle")
    inference.add_argument("--model", default="predecoder-fpga")
    inference.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    inference.add_argument("--parity-shots", type=positive_int, default=100_000)
    inference.add_argument("--seed", type=int, default=0)
    inference.add_argument("--json", default=None)
    inference.set_defaults(func=cmd_bench_inference)

    decode = benches.add_parser("decode", help="a pipeline's shots/s next to both PyMatching modes")
    decode.add_argument("--decoder", default="guided-matching", help="decoder name (default: guided-matching)")
    decode.add_argument("--model", default="predecoder-fpga", help="a shipped model name or a bundle path")
    add_experiment_args(decode, sweep=True, circuit=True)
    decode.add_argument("--shots", type=positive_int, default=20_000, help="shots decoded per measurement")
    decode.add_argument("--seconds", type=float, default=3.0, help="least time per measurement")
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--json", default=None)
    decode.set_defaults(func=cmd_bench_decode)

    server = benches.add_parser("server", help="gRPC latency and throughput vs in-process decoding")
    server.add_argument("--model", default="matching")
    add_experiment_args(server, sweep=False)
    server.add_argument("--target", default=None, help="a running server (default: start one on loopback)")
    server.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase")
    server.add_argument("--clients", type=positive_int, default=4, help="concurrent client threads")
    server.add_argument("--interleave", default=None, metavar="MODEL",
                        help="also measure single-shot latency while another process sends single shots to MODEL "
                             "(a served name, e.g. predecoder-d5-int8-guided)")
    server.add_argument("--interleave-rate", type=float, default=1000.0, metavar="CALLS_PER_S",
                        help="single shots per second sent to the --interleave model")
    server.add_argument("--seed", type=int, default=0)
    server.add_argument("--json", default=None)
    server.set_defaults(func=cmd_bench_server)

    memory = benches.add_parser("memory", help="server RSS once ready and after one pass over every model")
    memory.add_argument("--shots", type=positive_int, default=4096, help="shots per fixed-length model")
    memory.add_argument("--experiments", type=positive_int, default=64, help="streamed experiments per any-length model")
    memory.add_argument("--seed", type=int, default=0)
    memory.add_argument("--json", default=None)
    memory.set_defaults(func=cmd_bench_memory)

    stream = benches.add_parser("stream", help="windowed decoding of 10 to 10,000-round experiments")
    stream.add_argument("-d", "--distance", type=int_list, default=[5, 7, 9],
                        help="distances (the first one gets the headline figures and the LER check)")
    stream.add_argument("-p", type=float, default=0.003)
    stream.add_argument("--ler-shots", type=positive_int, default=20_000,
                        help="shots of the windowed vs whole-experiment LER check (r=100)")
    stream.add_argument("--decoder", choices=["matching", "guided-matching"], default="matching",
                        help="windowed matching, or windowed guided matching with --model")
    stream.add_argument("--model", default=None, help="the pre-decoder bundle of --decoder guided-matching")
    stream.add_argument("--round-budget", type=positive_int, default=None,
                        help="experiment-rounds per table cell (default 200,000 for matching, 20,000 for guided)")
    stream.add_argument("--seed", type=int, default=0)
    stream.add_argument("--json", default=None)
    stream.set_defaults(func=cmd_bench_stream)

    drift = benches.add_parser("drift", help="a static and an adaptive decoder while the noise drifts")
    add_experiment_args(drift, sweep=False)
    drift.add_argument("--segments", type=positive_int, nargs="+", default=[100_000, 200_000, 200_000],
                       help="shots per segment")
    drift.add_argument("--drifted", type=int, nargs="+", default=[0, 1, 0], help="1 where the drift is on")
    drift.add_argument("--window", type=positive_int, default=10_000, help="re-estimate every this many shots")
    drift.add_argument("--half-life", type=positive_int, default=20_000, help="forgetting half-life in shots")
    drift.add_argument("--matching", choices=["uncorrelated", "correlated"], default="correlated")
    add_drift_args(drift, "hot-spot")
    drift.set_defaults(func=cmd_bench_drift)

    soak = benches.add_parser("soak", help="mixed traffic from several client processes; checks every answer")
    soak.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    soak.add_argument("--clients", type=positive_int, default=4, help="client processes")
    soak.add_argument("--seed", type=int, default=0)
    soak.add_argument("--adapt", action="store_true",
                      help="replicas run --adapt; the models that adapt decode a drifted device (a hot spot) and are "
                           "judged by logical errors: over the run vs nominal, after it vs the true DEM")
    soak.add_argument("--json", default=None)
    soak.set_defaults(func=cmd_bench_soak)
