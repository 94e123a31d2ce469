"""Result tables on the terminal and JSON files next to the numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

WIDE_TABLE_COLUMNS = 150  # narrower terminals get one vertical table per result


def _fmt(value: float | None, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _with_ci(record: dict, prefix: str = "") -> str:
    low, high = record[f"{prefix}ler_ci"]
    return f"{_fmt(record[f'{prefix}ler'])} [{_fmt(low, '.2e')}, {_fmt(high, '.2e')}]"


def _experiment(spec: dict) -> str:
    if "label" in spec:  # a circuit file's experiment labels itself
        return spec["label"]
    return f"d={spec['distance']} r={spec['rounds']} p={spec['p']:g} {spec['basis'].upper()} {spec['noise']}"


def _decoder(record: dict) -> str:
    return record["decoder"] + (f" ({record['model']})" if record.get("model") else "")


def evaluation_rows(record: dict) -> list[tuple[str, str]]:
    """``(measure, value)`` pairs of one evaluation record, in reading order; absent measures left out."""
    rows = [("shots", f"{record['shots']:,}"), ("logical errors", str(record["errors"])),
            ("LER per shot [95% CI]", _with_ci(record)), ("LER per round", _fmt(record["ler_per_round"])),
            ("decode shots/s", _fmt(record["decode_shots_per_s"], ",.0f"))]
    for prefix, label, ratio_key in (("baseline_", "matching", "ler_ratio"),
                                     ("correlated_", "correlated matching", "correlated_ratio"),
                                     ("reference_", record.get("reference", "reference"), "reference_ratio")):
        if f"{prefix}ler" in record:
            rows += [(f"{label} LER [95% CI]", _with_ci(record, prefix)),
                     (f"LER / {label} LER", _fmt(record.get(ratio_key), ".3f"))]
    notes = pipeline_notes(record)
    if notes:
        rows.append(("pipeline", notes))
    if "peak_rss_mb" in record:
        rows.append(("peak memory", f"{record['peak_rss_mb']:,.0f} MB"))
    return rows


def evaluation_table(results: list[dict], width: int | None = None):
    """Evaluation records as one wide table (one row per point), or, when the terminal is
    narrower than :data:`WIDE_TABLE_COLUMNS`, one vertical table per record."""
    width = width or Console().width
    if width < WIDE_TABLE_COLUMNS:
        tables = []
        for r in results:
            table = Table(title=f"{_decoder(r)}, {_experiment(r['spec'])}", show_header=False, title_justify="left")
            table.add_column("measure")
            table.add_column("value", justify="right")
            for row in evaluation_rows(r):
                table.add_row(*row)
            tables.append(table)
        return Group(*tables)
    table = Table(title="nqec evaluate: LER ratios are against matching on the same shots (uncorrelated, correlated)")
    for column in ("decoder", "experiment", "shots", "errors", "LER/shot [95% CI]", "LER/round", "shots/s",
                   "÷ matching", "÷ correlated", "pipeline"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(_decoder(r), _experiment(r["spec"]), f"{r['shots']:,}", str(r["errors"]), _with_ci(r),
                      _fmt(r["ler_per_round"]), _fmt(r["decode_shots_per_s"], ",.0f"),
                      _fmt(r.get("ler_ratio"), ".3f"), _fmt(r.get("correlated_ratio"), ".3f"), pipeline_notes(r))
    return table


def pipeline_notes(record: dict) -> str:
    """What a neural pipeline did: residual defects and matching speed-up, or the fallback fraction."""
    notes = []
    if "residual_defect_fraction" in record:
        notes.append(f"residual {record['residual_defect_fraction']:.2f}")
    if record.get("matching_speedup"):
        notes.append(f"{record.get('residual_matching', 'matching')} {record['matching_speedup']:.2f}x faster")
    if record["decoder"] == "transformer":
        notes.append(f"fallback {record['stage_fraction']['matching']:.2%}")
    return ", ".join(notes)


def print_table(table) -> None:
    """Print a table (or group of tables) at the terminal's width."""
    Console(file=sys.stdout).print(table)


def write_json(path: str | Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def command_line() -> str:
    """The command that produced a result, recorded next to the numbers."""
    return " ".join(["nqec", *sys.argv[1:]])
