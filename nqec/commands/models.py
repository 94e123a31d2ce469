"""``nqec models``: the shipped model bundles and what they measured."""

from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from decoder.bundle import Bundle, shipped_models
    from decoder.spec import CodeSpec
    from training.report import print_table

    bundles = [Bundle.load(name) for name in shipped_models()]
    summaries = [bundle.summary() for bundle in bundles]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    table = Table(title="shipped models")
    for column in ("name", "kind", "trained on", "parameters", "default pipeline: LER ÷ matching, ÷ correlated (shots)",
                   "trained where, how long"):
        table.add_column(column)
    for bundle, s in zip(bundles, summaries):
        spec = CodeSpec.from_dict(s["spec"])
        trained_on = bundle.manifest.get("experiment", {}).get("label", spec.label())  # a circuit file's if any
        own = f"evaluate {spec.label()}"
        evaluations = sorted(key for key in s["metrics"] if key.startswith("evaluate d="))
        key = own if own in s["metrics"] else (evaluations[0] if evaluations else None)
        measured = s["metrics"].get(key) if key else None
        ratio = "-" if measured is None else (
            f"{measured['ler_ratio']:.3f}, "
            f"{'-' if measured.get('correlated_ratio') is None else format(measured['correlated_ratio'], '.3f')} "
            f"({measured['shots']:,}{'' if key == own else ', ' + key.removeprefix('evaluate ')})")
        totals = s["training_totals"]
        table.add_row(s["name"], s["kind"], trained_on, f"{s['parameters']:,}", ratio,
                      f"{' then '.join(dict.fromkeys(totals['machines']))}, {totals['wall_seconds'] / 60:.0f} min, "
                      f"{totals['samples']:,} samples")
    print_table(table)
    return 0


def register(commands) -> None:
    models = commands.add_parser("models", help="list the shipped model bundles")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)
