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


EXPERIMENT_DEFAULTS = {"distance": 5, "rounds": None, "p": 0.003, "noise": "depolarizing", "basis": "z"}
EXPERIMENT_FLAGS = {"distance": "-d", "rounds": "-r", "p": "-p", "noise": "--noise", "basis": "--basis"}


def add_experiment_args(parser: argparse.ArgumentParser, sweep: bool, circuit: bool = False) -> None:
    """``-d -r -p --noise --basis``; with ``sweep``, ``-d`` and ``-p`` take comma lists; with ``circuit``,
    also ``--circuit FILE.stim`` (the user's own circuit is then the whole experiment, and the other
    flags default to None so that :func:`experiments` can tell they were not given)."""
    default = {key: None if circuit else [value] if sweep and key in ("distance", "p") else value
               for key, value in EXPERIMENT_DEFAULTS.items()}
    plural = " (comma list for a sweep)" if sweep else ""
    parser.add_argument("-d", "--distance", type=int_list if sweep else int, default=default["distance"],
                        help=f"code distance, odd >= 3 (default: {EXPERIMENT_DEFAULTS['distance']}){plural}")
    parser.add_argument("-r", "--rounds", type=int, default=None, help="syndrome rounds (default: the distance)")
    parser.add_argument("-p", type=float_list if sweep else float, default=default["p"],
                        help=f"physical error rate in (0, 0.5) (default: {EXPERIMENT_DEFAULTS['p']}){plural}")
    parser.add_argument("--noise", choices=["depolarizing", "si1000"], default=default["noise"],
                        help="noise model (default: depolarizing)")
    parser.add_argument("--basis", choices=["z", "x"], default=default["basis"], help="memory basis (default: z)")
    if circuit:
        parser.add_argument("--circuit", default=None, metavar="FILE.stim",
                            help="your own Stim circuit as the experiment, instead of -d/-r/-p/--noise/--basis")


def experiments(args: argparse.Namespace) -> list:
    """The experiments of the experiment arguments: the ``--circuit`` file's, or one code spec per
    distance and p."""
    from training.evaluate import sweep_specs

    given = {key: getattr(args, key) for key in EXPERIMENT_DEFAULTS if getattr(args, key) is not None}
    if getattr(args, "circuit", None):
        from decoder.errors import NqecError
        from decoder.experiment import CircuitSpec

        if given:
            raise NqecError(f"--circuit is the whole experiment; drop {', '.join(EXPERIMENT_FLAGS[k] for k in given)}")
        return [CircuitSpec.from_file(args.circuit)]
    values = {**EXPERIMENT_DEFAULTS, **given}
    distances = values["distance"] if isinstance(values["distance"], list) else [values["distance"]]
    ps = values["p"] if isinstance(values["p"], list) else [values["p"]]
    return sweep_specs(distances, ps, values["rounds"], values["basis"], values["noise"])


def experiment(args: argparse.Namespace):
    """The experiment of single-experiment arguments."""
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
