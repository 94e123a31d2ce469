"""Open-synthesis resource estimate of the pre-decoder RTL with yosys (``synth_xilinx``).

No place and route and no timing (Debian's yosys 0.23 has no ``sta``): LUT, FF, carry, DSP and
BRAM counts of yosys's technology mapping for an UltraScale+ part. Vendor tools give the real
figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from decoder.errors import NqecError
from fpga.rtl import RtlDesign

LABEL = "open-synthesis estimate (yosys synth_xilinx, no place-and-route)"
VU13P = {"LUT": 1_728_000, "FF": 3_456_000, "DSP": 12_288, "BRAM": 2_688}
CELL_GROUPS = {"LUT": r"LUT\d|INV", "FF": r"FD\w*", "CARRY": r"CARRY\d", "DSP": r"DSP48\w*",
               "BRAM": r"RAMB\w*", "LUTRAM": r"RAM\d+[MSX]\w*", "SRL": r"SRL\w*", "MUXF": r"MUXF\d"}


def yosys_script(design: RtlDesign, grid: tuple[int, int], family: str) -> str:
    sources = " ".join(str(s.resolve()) for s in design.sources)
    height, width = grid
    return (f"read_verilog -defer {sources}\n"
            f"chparam -set H {height} -set W {width} {design.settings['top']}\n"
            f"synth_xilinx -family {family} -top {design.settings['top']} -flatten\n"
            "tee -o stat.json stat -json\n")


def count_cells(stat: dict) -> dict:
    """yosys ``stat -json`` -> counts per resource group (and the raw cell table)."""
    top = stat["design"] if "design" in stat else next(iter(stat["modules"].values()))
    cells = top.get("num_cells_by_type", {})
    counts = {group: sum(n for cell, n in cells.items() if re.fullmatch(pattern, cell))
              for group, pattern in CELL_GROUPS.items()}
    return {**counts, "cells": cells}


def synthesize(design: RtlDesign, work: str | Path, grid: tuple[int, int] | None = None,
               family: str = "xcup", timeout: float = 7200) -> dict:
    """Run yosys on the design (at ``grid``, default the one it was written for) and count resources."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    grid = tuple(grid or design.settings["grid"])
    (work / "synth.ys").write_text(yosys_script(design, grid, family))
    started = time.perf_counter()
    try:
        result = subprocess.run(["yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work,
                                capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NqecError("yosys not found: run make fpga-tools (Debian package yosys)") from None
    if result.returncode != 0:
        raise NqecError("yosys failed:\n" + "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:]))
    text = (work / "stat.json").read_text()
    counts = count_cells(json.loads(text[text.index("{"):]))
    return {"label": LABEL, "family": family, "grid": list(grid), "seconds": round(time.perf_counter() - started, 1),
            **{key: counts[key] for key in CELL_GROUPS}, "cells": counts["cells"],
            "fraction_of_vu13p": fractions_of_vu13p(counts)}


def fractions_of_vu13p(counts: dict) -> dict:
    """Shares of a VU13P's resources; LUTs include those used as shift registers and RAM."""
    used = {**counts, "LUT": counts["LUT"] + counts["SRL"] + counts["LUTRAM"]}
    return {key: used[key] / total for key, total in VU13P.items()}
