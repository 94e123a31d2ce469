"""One LER table over a (distance, p) grid from several ``nqec evaluate --json`` files.

Files of the same point that share seed and shots decoded the same Stim shots, so their
PyMatching baselines are the same records: the table shows each baseline once and every
pipeline's errors with its ratios to both modes.

Example:
    >>> point = {"spec": {"distance": 5, "rounds": 5, "p": 0.003, "basis": "z", "noise": "depolarizing"},
    ...          "seed": 1, "shots": 1000, "model": "m", "decoder": "guided-matching",
    ...          "records": {"guided-matching": {"errors": 8}, "matching": {"errors": 20},
    ...                      "matching-correlated": {"errors": 10}}}
    >>> (row,) = grid_rows([point])
    >>> row["matching_errors"], row["correlated_errors"], row["pipelines"]["guided-matching (m)"]
    (20, 10, {'errors': 8, 'vs_matching': 0.4, 'vs_correlated': 0.8})
"""

from __future__ import annotations

from decoder.errors import NqecError

BASELINES = {"matching": "matching_errors", "matching-correlated": "correlated_errors"}


def _ratio(errors: int, baseline: int) -> float | None:
    return errors / baseline if baseline else None


def grid_rows(results: list[dict]) -> list[dict]:
    """One row per (distance, rounds, p, noise, basis), sorted by distance then p: shots, both
    baselines' errors and, per pipeline (``decoder (model)``), its errors and ratios."""
    rows: dict[tuple, dict] = {}
    for result in results:
        spec = result["spec"]
        key = (spec["distance"], spec["rounds"], spec["p"], spec["noise"], spec["basis"])
        records = result["records"]
        missing = [name for name in BASELINES if name not in records]
        if missing:
            raise NqecError(f"the d={spec['distance']} p={spec['p']:g} result has no {', '.join(missing)} record: "
                            "evaluate without --no-baseline")
        row = rows.setdefault(key, {"distance": key[0], "rounds": key[1], "p": key[2], "noise": key[3],
                                    "basis": key[4], "shots": result["shots"], "seed": result["seed"],
                                    **{column: records[name]["errors"] for name, column in BASELINES.items()},
                                    "pipelines": {}})
        if (row["shots"], row["seed"]) != (result["shots"], result["seed"]):
            raise NqecError(f"two results at d={key[0]} p={key[2]:g} decoded different shots (seed {row['seed']}, "
                            f"{row['shots']:,} shots vs seed {result['seed']}, {result['shots']:,}): one table "
                            "row needs the same shots")
        errors = records[result["decoder"]]["errors"]
        label = result["decoder"] + (f" ({result['model']})" if result.get("model") else "")
        row["pipelines"][label] = {"errors": errors, "vs_matching": _ratio(errors, row["matching_errors"]),
                                   "vs_correlated": _ratio(errors, row["correlated_errors"])}
    return [rows[key] for key in sorted(rows)]


def pipeline_labels(rows: list[dict]) -> list[str]:
    """Every pipeline that appears in ``rows``, sorted."""
    return sorted({label for row in rows for label in row["pipelines"]})


def row_cells(row: dict, pipelines: list[str]) -> list[str]:
    """A row as text: d, p, shots, both baselines' errors, then ``errors (x plain, x corr.)`` per pipeline."""
    cells = [str(row["distance"]), f"{row['p']:g}", f"{row['shots']:,}", str(row["matching_errors"]),
             str(row["correlated_errors"])]
    for label in pipelines:
        entry = row["pipelines"].get(label)
        cells.append("-" if entry is None else
                     f"{entry['errors']} ({_fmt(entry['vs_matching'])}, {_fmt(entry['vs_correlated'])})")
    return cells


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table: errors per pipeline with ``x`` ratios to matching / correlated."""
    pipelines = pipeline_labels(rows)
    header = ["d", "p", "shots", "matching", "correlated"] + [f"{label}: errors (÷ plain, ÷ corr.)"
                                                              for label in pipelines]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row_cells(row, pipelines)) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"
