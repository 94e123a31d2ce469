"""FPGA flow: real hls4ml conversion and g++ C simulation of a trained pre-decoder bundle."""

import json

import numpy as np
import pytest

from decoder import NqecError
from fpga.convert import convert, stim_windows
from fpga.estimate import estimate
from fpga.fixed import FixedType
from fpga.vectors import check_results, write_vectors
from nqec.cli import main


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """The shipped d=5 FPGA pre-decoder: unlike a few-step test model it commits edges (p > 0.9)."""
    return convert("predecoder-fpga", tmp_path_factory.mktemp("hls") / "project")


def test_fixed_types_round_and_saturate_like_ap_fixed():
    rnd_sat = FixedType(6, 2, "AP_RND", "AP_SAT")  # step 1/16, range [-2, 2 - 1/16]
    assert rnd_sat.quantize(np.array([0.03125, 0.09, 5.0, -7.0])).tolist() == [0.0625, 0.0625, 1.9375, -2.0]
    trn_wrap = FixedType(4, 2)  # step 1/4, range [-2, 1.75], wraps
    assert trn_wrap.quantize(np.array([0.3, -0.3, 2.0])).tolist() == [0.25, -0.5, -2.0]
    assert FixedType.parse("ap_fixed<16,6,AP_RND,AP_SAT>") == FixedType(16, 6, "AP_RND", "AP_SAT")
    with pytest.raises(NqecError, match="expected a precision like ap_fixed<16,6>"):
        FixedType.parse("float")


def test_emulation_is_bit_exact_against_the_c_simulation(design):
    """On 1000 Stim windows (200 shots x 5 rounds, ~500 edges the float network commits at p > 0.9),
    the fixed-point design finds >= 97% of the float network's committed edges and >= 97% of its own
    are the float's (measured ~100%; slot agreement would not do: committing nothing agrees on 99.9%)."""
    windows = stim_windows(design.bundle, 200, seed=5)
    csim = design.csim(windows)
    assert np.array_equal(csim, design.emulate(windows))
    float_logits = design.bundle.run(windows)
    assert np.abs(csim - float_logits).max() < 0.25  # 10-bit weights, 16-bit activations: close to float
    ours, theirs = csim > np.log(0.9 / 0.1), float_logits > np.log(0.9 / 0.1)
    both = np.sum(ours & theirs)
    assert theirs.sum() >= 200 and both >= 0.97 * theirs.sum() and both >= 0.97 * ours.sum()


def test_csim_command_reports_agreement_and_paired_ler(predecoder_bundle, tmp_path):
    out = tmp_path / "csim.json"
    assert main(["fpga", "csim", "--model", str(predecoder_bundle.path), "--shots", "5000", "--csim-windows", "1000",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["emulation_bitexact"] and result["csim_windows"] == 1000
    assert result["edge_agreement"] > 0.999
    assert result["shots"] == 5000 and result["shots_with_different_outcome"] <= 25


def test_export_writes_project_vectors_and_estimate(predecoder_bundle, tmp_path, capsys):
    project = tmp_path / "fpga"
    assert main(["fpga", "export", "--model", str(predecoder_bundle.path), "--out", str(project), "--vectors", "50"]) == 0
    assert "ESTIMATE" in capsys.readouterr().out
    settings = json.loads((project / "nqec_fpga.json").read_text())
    assert settings["test_vectors"] == 50 and (project / "build_prj.tcl").is_file()
    inputs = np.loadtxt(project / "tb_data" / "tb_input_features.dat")
    assert inputs.shape == (50, 6 * 4 * 4)  # window 3 x 2 types, on a 4 x 4 grid (d=3)
    assert settings["estimate"]["multiplications_per_window"] > 0


def test_vendor_results_are_checked_against_the_vectors(design, tmp_path):
    windows = stim_windows(design.bundle, 10, seed=2)
    expected = design.emulate(windows)
    write_vectors(tmp_path, windows, expected)
    log = tmp_path / "tb_data" / "csim_results.log"
    channels_last = design.csim(windows).transpose(0, 2, 3, 1).reshape(len(windows), -1)
    np.savetxt(log, channels_last, fmt="%.6f")  # what the vendor testbench prints
    output_type = design.layers[-1].result_type
    assert check_results(tmp_path, "csim", output_type)["passed"]
    channels_last[3, 7] += 2.0 ** -output_type.fractional  # one LSB off in one vector
    np.savetxt(log, channels_last, fmt="%.6f")
    result = check_results(tmp_path, "csim", output_type)
    assert not result["passed"] and result["matching_vectors"] == len(windows) - 1


def test_vendor_steps_name_the_missing_tool(design, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    project = str(design.hls_model.config.get_output_dir())
    for step, tool in (("synth", "vitis_hls"), ("cosim", "vitis_hls"), ("bitstream", "vitis_hls")):
        assert main(["fpga", "build", step, "--project", project]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{tool} not found on PATH" in err


CSYNTH = """<?xml version="1.0"?>
<profile>
  <UserAssignments><TargetClockPeriod>4.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><EstimatedClockPeriod>3.512</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Best-caseLatency>37</Best-caseLatency><Worst-caseLatency>37</Worst-caseLatency>
      <Interval-min>1</Interval-min><Interval-max>1</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>0</BRAM_18K><DSP>4120</DSP><FF>210000</FF><LUT>640000</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>5376</BRAM_18K><DSP>12288</DSP><FF>3456000</FF><LUT>1728000</LUT><URAM>1280</URAM></AvailableResources>
  </AreaEstimates>
</profile>
"""


def test_report_parses_a_vitis_synthesis_report(tmp_path, capsys):
    (tmp_path / "project.tcl").write_text('set project_name "predecoder"\nset backend "vitis"\n')
    solution = tmp_path / "predecoder_prj" / "solution1"
    (solution / "syn" / "report").mkdir(parents=True)
    (tmp_path / "predecoder_prj" / "hls.app").write_text(
        '<project><solutions><solution name="solution1"/></solutions></project>')
    (solution / "syn" / "report" / "predecoder_csynth.xml").write_text(CSYNTH)
    out = tmp_path / "report.json"
    assert main(["fpga", "report", str(tmp_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["WorstLatency"], report["IntervalMax"], report["DSP"], report["LUT"]) == ("37", "1", "4120", "640000")
    assert main(["fpga", "report", str(tmp_path / "missing")]) == 2


def test_estimate_counts_multiplications(design):
    cost = estimate(design.layers, (6, 6, 6), reuse_factor=2, clock_ns=4.0)
    expected = sum(36 * layer.weight.size for layer in design.layers)  # d=5: 6 x 6 cells, every weight once per cell
    assert cost["multiplications_per_window"] == expected
    assert cost["parallel_multipliers"] == -(-expected // 2)
    assert cost["latency_cycles"] > len(design.layers) and "ESTIMATE" in cost["label"]
