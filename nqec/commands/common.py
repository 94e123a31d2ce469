"""Argument types, the experiment arguments and result output shared by the commands."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a comma list of integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_experiment_args(parser: argparse.ArgumentParser, sweep: bool) -> None:
    """``-d -r -p --noise --basis``; with ``sweep``, ``-d`` and ``-p`` take comma lists."""
    parser.add_argument("-d", "--distance", type=int_list if sweep else int, default=[5] if sweep else 5,
                        help="code distance, odd >= 3" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("-r", "--rounds", type=int, default=None, help="syndrome rounds (default: the distance)")
    parser.add_argument("-p", type=float_list if sweep else float, default=[0.003] if sweep else 0.003,
                        help="physical error rate in (0, 0.5)" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("--noise", choices=["depolarizing", "si1000"], default="depolarizing")
    parser.add_argument("--basis", choices=["z", "x"], default="z")


def experiments(args: argparse.Namespace) -> list:
    """The code specs of the experiment arguments (one per distance and p)."""
    from training.evaluate import sweep_specs

    distances = args.distance if isinstance(args.distance, list) else [args.distance]
    ps = args.p if isinstance(args.p, list) else [args.p]
    return sweep_specs(distances, ps, args.rounds, args.basis, args.noise)


def experiment(args: argparse.Namespace):
    """The code spec of single-experiment arguments."""
    (spec,) = experiments(args)
    return spec


def progress(total: int, description: str):
    """A transient progress bar and a function that advances it by ``n``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   transient=True)
    task = bar.add_task(description, total=total)
    return bar, lambda n: bar.advance(task, n)


def emit(table, payload: object, json_path: str | None) -> None:
    """Print a result table and, if asked, write the result's JSON."""
    from training.report import print_table

    print_table(table)
    write_result(payload, json_path)


def write_result(payload: dict, json_path: str | None) -> None:
    """Write a result's JSON if asked, and say so."""
    if json_path:
        from training.report import write_json

        write_json(json_path, payload)
        print(f"wrote {json_path}")
