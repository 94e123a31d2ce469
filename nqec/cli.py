"""The ``nqec`` command line. Each subcommand imports its libraries lazily, so ``nqec serve``
never pulls in torch or the training code."""

from __future__ import annotations

import argparse
import sys

from decoder.errors import NqecError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a comma list of integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_experiment_args(parser: argparse.ArgumentParser, sweep: bool) -> None:
    parser.add_argument("-d", "--distance", type=_int_list if sweep else int, default=[5] if sweep else 5,
                        help="code distance, odd >= 3" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("-r", "--rounds", type=int, default=None, help="syndrome rounds (default: the distance)")
    parser.add_argument("-p", type=_float_list if sweep else float, default=[0.003] if sweep else 0.003,
                        help="physical error rate in (0, 0.5)" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("--noise", choices=["depolarizing", "si1000"], default="depolarizing")
    parser.add_argument("--basis", choices=["z", "x"], default="z")


def _progress(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True)
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


def _evaluate_and_report(specs, decoder: str, model: str | None, shots: int, seed: int, baseline: bool,
                         json_path: str | None) -> list[dict]:
    from training.evaluate import evaluate_sweep
    from training.report import command_line, evaluation_table, print_table, write_json

    progress, advance = _progress(len(specs) * shots, f"decoding with {decoder}")
    with progress:
        results = evaluate_sweep(specs, decoder, shots, seed, baseline=baseline, model=model, on_progress=advance)
    for record in results:
        record["command"] = command_line()
    print_table(evaluation_table(results))
    if json_path:
        write_json(json_path, results[0] if len(results) == 1 else results)
        print(f"wrote {json_path}")
    return results


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import sweep_specs

    specs = sweep_specs(args.distance, args.p, args.rounds, args.basis, args.noise)
    _evaluate_and_report(specs, args.decoder, args.model, args.shots, args.seed, not args.no_baseline, args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on shipped defaults: d=5, r=5, p=0.003 depolarizing, the shipped decoders vs matching."""
    from decoder.spec import CodeSpec

    _evaluate_and_report([CodeSpec(5, 5, 0.003)], "matching", None, args.shots, args.seed, True, args.json)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from training.plot import load_results, plot_ler

    plot_ler(load_results(args.results), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_data import bench_data
    from training.evaluate import sweep_specs
    from training.report import command_line, print_table, write_json

    (spec,) = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)
    result = bench_data(spec, args.batch, args.batches, args.seed)
    result["command"] = command_line()
    table = Table(title=f"nqec bench data ({spec.label()}, batch {args.batch})")
    for column in ("stream", "nqec samples/s", "stim raw samples/s", "ratio"):
        table.add_column(column, justify="right")
    for name, row in result["streams"].items():
        table.add_row(name, f"{row['stream_samples_per_s']:,.0f}", f"{row['stim_samples_per_s']:,.0f}", f"{row['ratio']:.3f}")
    print_table(table)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nqec", description="Neural decoders for surface-code QEC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = commands.add_parser("evaluate", help="logical error rate of a decoder vs matching on Stim shots")
    evaluate.add_argument("--decoder", default="matching", help="decoder name (default: matching)")
    evaluate.add_argument("--model", default=None, help="a shipped model name or a bundle path (neural decoders)")
    _add_experiment_args(evaluate, sweep=True)
    evaluate.add_argument("--shots", type=_positive_int, default=100_000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-baseline", action="store_true", help="skip decoding the same shots with matching")
    evaluate.add_argument("--json", default=None, help="write the results to this JSON file")
    evaluate.set_defaults(func=cmd_evaluate)

    demo = commands.add_parser("demo", help="decode Stim shots with the shipped decoders and print the table")
    demo.add_argument("--shots", type=_positive_int, default=200_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", default=None)
    demo.set_defaults(func=cmd_demo)

    plot = commands.add_parser("plot", help="plot LER vs p per distance from evaluate JSON files")
    plot.add_argument("results", nargs="+", help="JSON files from `nqec evaluate --json`")
    plot.add_argument("--out", default="ler.png", help="output PNG (default: ler.png)")
    plot.set_defaults(func=cmd_plot)

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    data = benches.add_parser("data", help="training-stream samples/s vs Stim's raw sampler")
    _add_experiment_args(data, sweep=False)
    data.add_argument("--batch", type=_positive_int, default=1024)
    data.add_argument("--batches", type=_positive_int, default=200)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--json", default=None)
    data.set_defaults(func=cmd_bench_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line and return a non-zero exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NqecError as exc:
        print(f"nqec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nqec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
