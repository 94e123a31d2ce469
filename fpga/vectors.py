"""Test vectors for the generated testbench, and the check of vendor C-sim / RTL co-sim outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from decoder.errors import NqecError
from fpga.fixed import FixedType

INPUT_FILE = "tb_input_features.dat"
EXPECTED_FILE = "tb_output_predictions.dat"
RESULT_LOGS = {"csim": "csim_results.log", "cosim": "rtl_cosim_results.log"}


def write_vectors(project: str | Path, windows: np.ndarray, expected: np.ndarray) -> None:
    """Inputs flattened channels-first, expected outputs channels-last, one vector per line."""
    tb = Path(project) / "tb_data"
    tb.mkdir(parents=True, exist_ok=True)
    np.savetxt(tb / INPUT_FILE, windows.reshape(len(windows), -1), fmt="%g")
    np.savetxt(tb / EXPECTED_FILE, expected.transpose(0, 2, 3, 1).reshape(len(expected), -1), fmt="%.10g")


def check_results(project: str | Path, step: str, output_type: FixedType) -> dict:
    """Compare a vendor simulation's output log with the expected vectors, within half an output LSB."""
    tb = Path(project) / "tb_data"
    log = tb / RESULT_LOGS[step]
    if not log.is_file():
        raise NqecError(f"{log} not found: run the vendor {step} first (make fpga-{step if step == 'cosim' else 'synth'})")
    expected = np.loadtxt(tb / EXPECTED_FILE, ndmin=2)
    got = np.loadtxt(log, ndmin=2)
    if got.shape != expected.shape:
        raise NqecError(f"{log} has {got.shape} values, expected {expected.shape}")
    tolerance = 0.5 * 2.0 ** -output_type.fractional
    matching = np.all(np.abs(got - expected) < tolerance, axis=1)
    return {"step": step, "vectors": len(expected), "matching_vectors": int(matching.sum()),
            "passed": bool(matching.all())}
