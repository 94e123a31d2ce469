"""``nqec demo``: every shipped model in each of its pipelines, next to both PyMatching modes on
the same shots, at the headline operating point; one table that fits 80 columns."""

from __future__ import annotations

import argparse
import math
import sys

from decoder.errors import NqecError
from nqec.commands.common import positive_int, progress, write_result

HEADLINE = dict(distance=5, rounds=5, p=0.003)  # where the README's numbers are quoted
HEADLINE_PIPELINE = ("guided-matching", "predecoder-d5-int8")  # the one the closing sentence is about
BASELINES = ("matching", "matching-correlated")


def demo_groups(headline) -> list[tuple]:
    """``(spec, {label: (decoder name, model, decoder)})`` groups, each decoded on shared shots: the
    headline spec with every pipeline that runs there, then each model that runs only at its own spec."""
    from decoder.bundle import PIPELINES, Bundle, shipped_models
    from decoder.registry import build_decoder

    def baselines(spec) -> dict:
        return {name: (name, None, build_decoder(name, spec)) for name in BASELINES}

    groups = {headline: baselines(headline)}
    for bundle in map(Bundle.load, shipped_models()):
        for pipeline in PIPELINES[bundle.kind]:
            try:
                spec, decoder = headline, bundle.decoder(headline, pipeline=pipeline)
            except NqecError:  # tied to its own geometry (transformer-d3)
                spec, decoder = bundle.spec, bundle.decoder(pipeline=pipeline)
            if spec not in groups:
                groups[spec] = baselines(spec)
            groups[spec][f"{pipeline} ({bundle.name})"] = (pipeline, bundle.name, decoder)
    return list(groups.items())


def run_demo(groups: list, shots: int, seed: int, on_progress=None) -> list[dict]:
    """Decode ``shots`` shots per group of :func:`demo_groups`; one row per (decoder, model) with its
    LER ratios against both PyMatching modes on its group's shots (the headline group's baselines first)."""
    from decoder.evaluation import decode_same_shots, ratio
    from training.evaluate import point_seed

    rows = []
    for index, (spec, members) in enumerate(groups):
        decoders = {label: decoder for label, (_, _, decoder) in members.items()}
        records = decode_same_shots(spec, decoders, shots, point_seed(seed, index), on_progress)
        plain, correlated = (records[name] for name in BASELINES)
        for label, (name, model, _) in members.items():
            if index and model is None:
                continue  # another spec's baselines show only as its models' ratios
            stats = records[label]
            rows.append({**stats.to_dict(spec.rounds), "decoder": name, "model": model, "spec": spec.to_dict(),
                         "headline": index == 0, "vs_matching": ratio(stats, plain),
                         "vs_correlated": ratio(stats, correlated)})
    return rows


def _ler_cell(row: dict, exponent: int) -> str:
    scale = 10.0 ** -exponent
    low, high = row["ler_ci"]
    return f"{row['ler'] * scale:.2f} ({low * scale:.2f}-{high * scale:.2f})"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rate(shots_per_s: float) -> str:
    return f"{shots_per_s / 1e3:.0f}k" if shots_per_s >= 1e5 else f"{shots_per_s / 1e3:.1f}k"


def _spec_cell(spec: dict) -> str:
    """``d=5``, and whatever else differs from the headline spec."""
    extra = [f"r={spec['rounds']}"] if spec["rounds"] != spec["distance"] else []
    extra += [f"p={spec['p']:g}"] if spec["p"] != HEADLINE["p"] else []
    extra += [value for value in (spec["basis"], spec["noise"]) if value not in ("z", "depolarizing")]
    return " ".join([f"d={spec['distance']}", *extra])


def summary_table(rows: list[dict]):
    """The demo's table, at most 80 columns: one row per (decoder, model); LERs with their 95% Wilson
    interval in one power of ten; a caption for rows at another spec."""
    from rich import box
    from rich.table import Table

    first = rows[0]
    exponent = math.floor(math.log10(max(row["ler_ci"][1] for row in rows)))  # every cell below 10
    table = Table(title=f"d={HEADLINE['distance']} r={HEADLINE['rounds']} p={HEADLINE['p']:g} Z depolarizing, "
                        f"{first['shots']:,} shots, ratios on the same shots",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    for column in ("decoder", "model", "spec"):
        table.add_column(column)
    for column in (f"LER ×1e{exponent}\n(95% CI)", "÷\nplain", "÷\ncorr.", "shots/s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["decoder"], row["model"] or "-", _spec_cell(row["spec"]), _ler_cell(row, exponent),
                      _ratio(row["vs_matching"]), _ratio(row["vs_correlated"]), _rate(row["shots_per_s"]))
    table.caption = " ".join(f"{row['model']} runs only at its own spec (d={row['spec']['distance']} "
                             f"r={row['spec']['rounds']} p={row['spec']['p']:g}): its ratios are against both "
                             f"PyMatching modes on {row['shots']:,} shots of that spec."
                             for row in rows if not row["headline"])
    return table


def headline_sentence(rows: list[dict]) -> str:
    """One sentence on what the table shows: the headline pipeline (not the luckiest row: picking the
    lowest LER among many would flatter it) against both modes at the headline spec."""
    headline = [row for row in rows if row["headline"] and (row["decoder"], row["model"]) == HEADLINE_PIPELINE]
    if not headline:
        return "The headline pipeline is not shipped: matching in both modes only."
    best = headline[0]
    plain, correlated = rows[:2]
    if not (plain["errors"] and correlated["errors"]):
        return f"Too few shots for ratios: a PyMatching mode made no logical error in {plain['shots']:,} shots."
    separated = best["ler_ci"][1] < plain["ler_ci"][0]
    return (f"At d={HEADLINE['distance']} p={HEADLINE['p']:g}, {best['decoder']} with {best['model']} makes "
            f"{best['vs_matching']:.2f}x the logical errors of plain matching "
            f"({'95% intervals apart' if separated else '95% intervals overlap'}) and "
            f"{best['vs_correlated']:.2f}x those of correlated matching, at {best['shots_per_s']:,.0f} "
            f"vs {correlated['shots_per_s']:,.0f} shots/s.")


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from decoder.spec import CodeSpec
    from training.report import command_line

    groups = demo_groups(CodeSpec(**HEADLINE))
    bar, advance = progress(len(groups) * args.shots, "decoding")
    with bar:
        rows = run_demo(groups, args.shots, args.seed, advance)
    console = Console(file=sys.stdout)
    console.print(summary_table(rows))
    console.print(headline_sentence(rows), markup=False, highlight=False)  # wrapped to the terminal's width
    write_result({"rows": rows, "seed": args.seed, "command": command_line()}, args.json)
    return 0


def register(commands) -> None:
    demo = commands.add_parser("demo", help="every shipped model next to both PyMatching modes at d=5, p=0.003",
                               description="Decode Stim shots at d=5 r=5 p=0.003 with every shipped model in each "
                                           "of its pipelines and with both PyMatching modes, all on the same shots "
                                           "(a model tied to another geometry: at its own spec), and print one table.")
    demo.add_argument("--shots", type=positive_int, default=100_000, help="shots per spec (default 100,000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", default=None, help="write the rows to this JSON file")
    demo.set_defaults(func=cmd_demo)
