"""``nqec noise``: learn the device's error model from its detection events; planted drifts
(``nqec bench drift`` runs a decoder that follows them)."""

from __future__ import annotations

import argparse

from nqec.commands.common import add_experiment_args, emit, experiment, positive_int


def _experiment(args: argparse.Namespace):
    """The user's circuit file (``--circuit``) or the code spec of ``-d -r -p``."""
    if args.circuit:
        from decoder.experiment import CircuitSpec

        return CircuitSpec.from_file(args.circuit)
    return experiment(args)


def drift_of(args: argparse.Namespace):
    from training.bench_drift import Drift

    return Drift(args.drift, args.strength, args.size)


def cmd_noise_estimate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from decoder.errors import NqecError
    from decoder.noise_estimate import DemGraph, EdgeAccumulator, plot_estimate, reweighted_dem
    from training.report import command_line

    spec = _experiment(args)
    dem = spec.dem()
    accumulator = EdgeAccumulator(dem, half_life=None)
    if args.events:
        from decoder.shot_files import read_shots

        for chunk in read_shots(args.events, args.in_format, dem.num_detectors):
            accumulator.update(chunk)
    elif args.shots:
        circuit = drift_of(args).apply(spec.circuit()) if args.drift else spec.circuit()
        accumulator.update(circuit.compile_detector_sampler(seed=args.seed).sample(args.shots, bit_packed=True))
    else:
        raise NqecError("expected detection events: --in FILE, or --shots N to sample the circuit itself")
    estimate = accumulator.estimate()
    reweighted_dem(dem, estimate).to_file(args.out)
    rows = estimate.top_departures(args.top)
    table = Table(title=f"edges furthest from nominal ({estimate.shots:,.0f} shots, {len(estimate.p)} edges)")
    for column in ("detectors", "nominal", "estimate", "ratio (95%)"):
        table.add_column(column, justify="right")
    for row in rows:
        low, high = row["ratio_interval"]
        table.add_row(" ".join(map(str, row["detectors"])), f"{row['nominal']:.2e}", f"{row['estimate']:.2e}",
                      f"{row['ratio']:.2f}x [{low:.2f}, {high:.2f}]")
    if args.plot:
        plot_estimate(estimate, DemGraph.from_dem(dem), args.plot)
        print(f"wrote {args.plot}")
    print(f"wrote {args.out}")
    emit(table, {"experiment": spec.to_dict(), "events": args.events, "shots": estimate.shots, "dem": args.out,
                 "edges": len(estimate.p), "top_departures": rows, "command": command_line()}, args.json)
    return 0


def cmd_noise_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_drift import compare_dems
    from training.report import command_line

    spec = experiment(args)
    result = compare_dems(spec, drift_of(args), train_shots=args.train_shots, test_shots=args.shots, seed=args.seed,
                          model=args.model)
    result["command"] = command_line()
    guided = f"; guided: {args.model}" if args.model else ""
    table = Table(title=f"{spec.label()}, drift {args.drift} {args.strength:g}: errors on {args.shots:,} shots "
                        f"(DEM learned from {args.train_shots:,}{guided})")
    for column in ("decoder", "DEM", "errors", "LER", "errors ÷ true DEM's (95%)"):
        table.add_column(column, justify="right")
    for mode, decoders in result["decoders"].items():
        for name, row in decoders.items():
            low, high = row["vs_true"]["ratio_95"]
            table.add_row(mode.split()[0], name, str(row["errors"]), f"{row['ler']:.2e}",  # "guided MODEL": in the title
                          f"{row['vs_true']['ratio']:.3f}x [{low:.3f}, {high:.3f}]")
    emit(table, result, args.json)
    return 0


def add_drift_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    from training.bench_drift import DRIFT_KINDS

    parser.add_argument("--drift", choices=DRIFT_KINDS, default=default,
                        help="planted drift: hot-spot (data qubits), readout (one ancilla), coupler (one CX pair)")
    parser.add_argument("--strength", type=float, default=0.03, help="the drift's added error probability")
    parser.add_argument("--size", type=positive_int, default=3, help="hot-spot data qubits in a row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the result as JSON")


def register(commands) -> None:
    noise = commands.add_parser("noise", help="learn the device's error model from its detection events")
    area = noise.add_subparsers(dest="noise_command", required=True, metavar="SUBCOMMAND")

    estimate = area.add_parser("estimate", help="edge probabilities from detection events -> a reweighted DEM")
    add_experiment_args(estimate, sweep=False)
    estimate.add_argument("--circuit", help="the experiment's Stim circuit file (instead of -d -r -p)")
    estimate.add_argument("--in", dest="events", help="detection events file (no observables)")
    estimate.add_argument("--in-format", default="b8", help="b8, 01, r8, ptb64, hits or dets (default: b8)")
    estimate.add_argument("--shots", type=positive_int, help="instead of --in: sample this many shots of the circuit")
    estimate.add_argument("--out", default="estimated.dem", help="the reweighted DEM (default: estimated.dem)")
    estimate.add_argument("--plot", help="PNG: estimate / nominal over the lattice, per round")
    estimate.add_argument("--top", type=positive_int, default=20, help="edges listed (default: 20)")
    add_drift_args(estimate, None)
    estimate.set_defaults(func=cmd_noise_estimate)

    compare = area.add_parser("compare", help="matching from the nominal, estimated and true DEM on drifted shots")
    add_experiment_args(compare, sweep=False)
    compare.add_argument("--train-shots", type=positive_int, default=100_000, help="shots the DEM is learned from")
    compare.add_argument("--shots", type=positive_int, default=100_000, help="test shots (fresh, same for all)")
    compare.add_argument("--model", help="also guided matching with this pre-decoder bundle, each DEM its prior")
    add_drift_args(compare, "hot-spot")
    compare.set_defaults(func=cmd_noise_compare)
