"""``nqec evaluate``, ``plot`` and ``table``: logical error rates on Stim shots."""

from __future__ import annotations

import argparse

from decoder.errors import NqecError
from nqec.commands.common import add_experiment_args, emit, experiments, positive_int, progress


def evaluate_and_report(jobs: list[tuple[list, str, str | None]], shots: int, seed: int, baseline: bool,
                        json_path: str | None, matching: str | None = None,
                        reference: str | None = None, decoder_dem: str | None = None,
                        windowed: bool = False) -> list[dict]:
    """Evaluate each ``(specs, decoder, model)`` job on ``shots`` shots per spec; print one table."""
    from training.evaluate import evaluate_sweep
    from training.report import command_line, evaluation_table

    bar, advance = progress(sum(len(specs) for specs, _, _ in jobs) * shots, "decoding")
    results = []
    with bar:
        for specs, decoder, model in jobs:
            results += evaluate_sweep(specs, decoder, shots, seed, baseline=baseline, model=model, on_progress=advance,
                                      matching=matching, reference=reference, decoder_dem=decoder_dem,
                                      windowed=windowed)
    for record in results:
        record["command"] = command_line()
    emit(evaluation_table(results), results[0] if len(results) == 1 else results, json_path)
    return results


def cmd_evaluate(args: argparse.Namespace) -> int:
    from decoder.experiment import experiment_from_dict

    results = evaluate_and_report([(experiments(args), args.decoder, args.model)], args.shots, args.seed,
                                  not args.no_baseline, args.json, args.matching, args.reference, args.decoder_dem,
                                  args.windowed)
    if args.record:
        from decoder.bundle import resolve_model
        from training.export import metrics_key, record_metrics

        if args.model is None:
            raise NqecError("--record stores results in a model bundle: give --model")
        bundle_dir = resolve_model(args.model)
        for record in results:
            record_metrics(bundle_dir, metrics_key(args.model, args.decoder, experiment_from_dict(record["spec"])), record)
        print(f"recorded {len(results)} result(s) in {bundle_dir / 'manifest.json'}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from training.plot import load_results, plot_ler

    plot_ler(load_results(args.results), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.grid import grid_rows, markdown_table, pipeline_labels, row_cells
    from training.plot import load_results
    from training.report import command_line

    rows = grid_rows(load_results(args.results))
    if args.markdown:
        print(markdown_table(rows))
        return 0
    pipelines = pipeline_labels(rows)
    table = Table(title="logical errors on the same shots per point: plain and correlated PyMatching, and each "
                        "pipeline's errors (its LER ÷ plain, ÷ correlated)", show_edge=False, pad_edge=False)
    for column in ("d", "p", "shots", "plain", "corr.", *pipelines):
        table.add_column(column.replace(" (", "\n("), justify="right")  # model names on a line of their own
    for row in rows:
        table.add_row(*row_cells(row, pipelines))
    emit(table, {"rows": rows, "sources": args.results, "command": command_line()}, args.json)
    return 0


def register(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="logical error rate of a decoder vs matching on Stim shots")
    evaluate.add_argument("--decoder", default="matching", help="decoder name (default: matching)")
    evaluate.add_argument("--model", default=None, help="a shipped model name or a bundle path (neural decoders)")
    add_experiment_args(evaluate, sweep=True, circuit=True)
    evaluate.add_argument("--decoder-dem", default=None, metavar="FILE.dem",
                          help="the decoder under test uses this DEM's probabilities (same structure as the "
                               "experiment's, e.g. estimated from detection events); the baselines keep the true DEM")
    evaluate.add_argument("--windowed", action="store_true",
                          help="decode with the decoder's sliding-window form (as rounds arrive; matching, "
                               "matching-correlated, guided-matching); the baselines decode the experiments whole")
    evaluate.add_argument("--shots", type=positive_int, default=100_000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--matching", choices=["uncorrelated", "correlated"], default=None,
                          help="matching mode: of --decoder matching (default uncorrelated), or of a neural "
                               "pipeline's residual/fallback stage (default: the bundle's)")
    evaluate.add_argument("--no-baseline", action="store_true",
                          help="skip decoding the same shots with both PyMatching modes")
    evaluate.add_argument("--reference", choices=["tesseract"], default=None,
                          help="also decode the same shots with a near-optimal reference (extra 'reference')")
    evaluate.add_argument("--json", default=None, help="write the results to this JSON file")
    evaluate.add_argument("--record", action="store_true", help="also store the results in the model bundle's manifest")
    evaluate.set_defaults(func=cmd_evaluate)

    plot = commands.add_parser("plot", help="plot LER vs p per distance from evaluate JSON files")
    plot.add_argument("results", nargs="+", help="JSON files from `nqec evaluate --json`")
    plot.add_argument("--out", default="ler.png", help="output PNG (default: ler.png)")
    plot.set_defaults(func=cmd_plot)

    table = commands.add_parser("table", help="one LER table over a d x p grid from evaluate JSON files")
    table.add_argument("results", nargs="+", help="JSON files from `nqec evaluate --json` (same seed per point)")
    table.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    table.add_argument("--json", default=None, help="write the combined rows to this JSON file")
    table.set_defaults(func=cmd_table)
