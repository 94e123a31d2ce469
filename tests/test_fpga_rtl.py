"""The open RTL flow: da4ml kernels in the streaming top, simulated with Icarus Verilog bit for bit
against the fixed-point emulation (make test installs iverilog)."""

import json

import numpy as np
import pytest

from decoder.errors import NqecError
from fpga.convert import INPUT_TYPE
from fpga.fixed import ConvLayer, FixedType, emulate
from fpga.rtl import RtlDesign, window_latency, write_rtl
from fpga.rtlsim import simulate
from fpga.synth_open import synthesize
from nqec.cli import main


def _tiny_layers(seed: int) -> list[ConvLayer]:
    """A 3x3 then a 1x1 layer with random weights: small enough to simulate in a second."""
    rng = np.random.default_rng(seed)
    weight, accum = FixedType(6, 1, "AP_RND", "AP_SAT"), FixedType(20, 8)
    result = FixedType(8, 3, "AP_RND", "AP_SAT")
    shapes = [(3, 6, 3, 3, True), (2, 3, 1, 1, False)]
    return [ConvLayer(f"net_{i}", weight.quantize(rng.normal(0, 0.6, shape[:4])), accum.quantize(rng.normal(0, 0.5, shape[0])),
                      weight, accum, result, shape[4]) for i, shape in enumerate(shapes)]


def test_line_buffer_borders_on_a_non_square_grid(tmp_path):
    """Every pixel of a 3x5 grid, corners and edges included, all-ones and random windows, with
    and without gaps between windows."""
    layers = _tiny_layers(seed=3)
    design = write_rtl(layers, 6, (3, 5), tmp_path / "rtl")
    rng = np.random.default_rng(4)
    windows = np.concatenate([np.ones((1, 6, 3, 5)), (rng.random((6, 6, 3, 5)) < 0.3)]).astype(np.float64)
    expected = emulate(layers, INPUT_TYPE, windows)
    assert np.abs(expected).max() > 0  # the check compares non-trivial logits
    for gap in (0, 4):
        logits, cycles = simulate(design, windows, tmp_path / f"sim{gap}", "icarus", gap=gap)
        assert np.array_equal(logits, expected)
        assert cycles["cycles_per_window"] == 15 + gap  # one pixel per cycle


def test_shipped_predecoder_rtl_is_bit_exact_on_stim_windows(tmp_path, capsys):
    """`nqec fpga rtlsim` on predecoder-fpga's RTL for a d=3 grid (Icarus): every logit equals the
    emulation's; one window per 16 cycles plus the gap; latency = kernel pipelines + line buffers."""
    out = tmp_path / "rtlsim.json"
    assert main(["fpga", "rtlsim", "-d", "3", "--windows", "3", "--simulator", "icarus", "--gap", "1",
                 "--out", str(tmp_path / "rtl"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["windows"], result["mismatches"], result["grid"]) == (3, 0, [4, 4])
    assert result["cycles_per_window"] == 16 + 1
    design = RtlDesign.load(tmp_path / "rtl")
    pipeline = sum(k.latency + (window_latency(4) if k.taps == 9 else 0) for k in design.kernels)
    assert pipeline <= result["latency_cycles"] <= pipeline + 4
    assert "0 of 3 Stim windows differ" in capsys.readouterr().out


def test_windows_of_another_grid_are_refused(tmp_path):
    design = write_rtl(_tiny_layers(seed=1), 6, (3, 5), tmp_path / "rtl")
    with pytest.raises(NqecError, match=r"6 channels on a 4x4 grid; the RTL .* takes 6 on \[3, 5\]"):
        simulate(design, np.zeros((1, 6, 4, 4)), tmp_path / "sim")
    with pytest.raises(NqecError, match="idle cycles >= 0, got -1"):
        simulate(design, np.zeros((1, 6, 3, 5)), tmp_path / "sim", gap=-1)
    with pytest.raises(NqecError, match="no RTL design"):
        RtlDesign.load(tmp_path / "missing")


def test_a_missing_simulator_is_one_line_naming_it(tmp_path, monkeypatch):
    design = write_rtl(_tiny_layers(seed=2), 6, (3, 3), tmp_path / "rtl")
    monkeypatch.setenv("PATH", str(tmp_path))  # no iverilog on it
    with pytest.raises(NqecError, match="^iverilog not found: run make fpga-tools$"):
        simulate(design, np.zeros((1, 6, 3, 3)), tmp_path / "sim", "icarus")


def test_yosys_counts_the_resources_of_the_rtl(tmp_path):
    """A real yosys synth_xilinx run on a small design: shift-and-add kernels use LUTs and carries,
    no DSPs; the line buffer and pipelines use flip-flops (make test installs yosys)."""
    design = write_rtl(_tiny_layers(seed=5), 6, (4, 4), tmp_path / "rtl")
    result = synthesize(design, tmp_path / "yosys")
    assert result["LUT"] > 100 and result["FF"] > 100 and result["CARRY"] > 0 and result["DSP"] == 0
    assert result["label"].startswith("open-synthesis estimate") and result["grid"] == [4, 4]
    assert result["fraction_of_vu13p"]["LUT"] == pytest.approx(
        (result["LUT"] + result["SRL"] + result["LUTRAM"]) / 1_728_000)
