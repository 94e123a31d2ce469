"""LER vs p per distance, log-log, with Wilson interval bars."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from decoder.errors import NqecError


def load_results(paths: list[str]) -> list[dict]:
    """Evaluation records from JSON files written by ``nqec evaluate --json``."""
    records = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise NqecError(f"results file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise NqecError(f"{path} is not JSON ({exc.msg}); expected output of `nqec evaluate --json`") from None
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            if not isinstance(item, dict) or not {"ler", "ler_ci", "spec"} <= set(item):
                raise NqecError(f"{path}: expected evaluation records with keys ler, ler_ci, spec")
            records.append(item)
    return records


# baseline key prefix in evaluation records -> label and line style of its curve
BASELINE_CURVES = {"baseline_": ("matching", ":"), "correlated_": ("correlated matching", "--")}


def plot_ler(records: list[dict], out: str) -> None:
    """Draw one line per (decoder, distance): LER per shot vs p, log-log, with interval bars, and
    both PyMatching baselines decoded on the same shots (dotted: uncorrelated, dashed: correlated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for record in records:
        label = record["decoder"] + (f" ({record['model']})" if record.get("model") else "")
        groups[(label, record["spec"]["distance"])].append(record)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for (label, distance), group in sorted(groups.items()):
        group.sort(key=lambda r: r["spec"]["p"])
        p = np.array([r["spec"]["p"] for r in group])
        ler = np.array([r["ler"] for r in group])
        lo = np.array([r["ler_ci"][0] for r in group])
        hi = np.array([r["ler_ci"][1] for r in group])
        line = ax.errorbar(p, ler, yerr=[ler - lo, hi - ler], marker="o", capsize=3, label=f"{label} d={distance}")
        color = line.lines[0].get_color()
        for prefix, (name, style) in BASELINE_CURVES.items():
            if all(f"{prefix}ler" in r for r in group) and not label.startswith(name):
                ax.plot(p, [r[f"{prefix}ler"] for r in group], style, color=color, alpha=0.7,
                        label=f"{name} d={distance} (same shots)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("physical error rate p")
    ax.set_ylabel("logical error rate per shot")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
