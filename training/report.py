"""Result tables on the terminal and JSON files next to the numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _fmt(value: float | None, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def evaluation_table(results: list[dict]) -> Table:
    """A rich table of evaluation records (one row per point)."""
    table = Table(title="nqec evaluate")
    for column in ("decoder", "model", "experiment", "shots", "errors", "LER/shot [95% CI]", "LER/round",
                   "shots/s", "matching LER", "ratio", "pipeline"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in results:
        spec = r["spec"]
        table.add_row(
            r["decoder"], r.get("model") or "-",
            f"d={spec['distance']} r={spec['rounds']} p={spec['p']:g} {spec['basis'].upper()} {spec['noise']}",
            f"{r['shots']:,}", str(r["errors"]),
            f"{_fmt(r['ler'])} [{_fmt(r['ler_ci'][0], '.2e')}, {_fmt(r['ler_ci'][1], '.2e')}]",
            _fmt(r["ler_per_round"]),
            _fmt(r["decode_shots_per_s"], ",.0f"),
            _fmt(r.get("baseline_ler")),
            _fmt(r.get("ler_ratio"), ".3f"),
            pipeline_notes(r),
        )
    return table


def pipeline_notes(record: dict) -> str:
    """What a neural pipeline did: residual defects and matching speed-up, or the fallback fraction."""
    notes = []
    if "residual_defect_fraction" in record:
        notes.append(f"residual {record['residual_defect_fraction']:.2f}")
    if record.get("matching_speedup"):
        notes.append(f"matching {record['matching_speedup']:.2f}x faster")
    if record["decoder"] == "transformer":
        notes.append(f"fallback {record['stage_fraction']['matching']:.2%}")
    return ", ".join(notes)


def print_table(table: Table) -> None:
    Console(file=sys.stdout, width=max(240, Console().width)).print(table)


def write_json(path: str | Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def command_line() -> str:
    """The command that produced a result, recorded next to the numbers."""
    return " ".join(["nqec", *sys.argv[1:]])
