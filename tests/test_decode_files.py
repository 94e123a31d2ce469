"""`nqec decode` on shot files: Stim's formats in and out, LER with --obs-in, one-line refusals."""

import json

import numpy as np
import pymatching
import pytest
import stim

from decoder import CodeSpec
from decoder.shot_files import FORMATS, read_shots
from nqec.cli import main

SPEC = CodeSpec(3, 3, 0.02)
SHOTS = 640  # a multiple of 64, for ptb64


@pytest.fixture(scope="module")
def shots():
    """Detection events and observable flips of SHOTS shots (seeded)."""
    return SPEC.circuit().compile_detector_sampler(seed=7).sample(SHOTS, separate_observables=True)


@pytest.fixture
def circuit_file(tmp_path):
    path = tmp_path / "d3.stim"
    SPEC.circuit().to_file(path)
    return path


def _write(path, data, fmt, **counts):
    stim.write_shot_data_file(data=data, path=str(path), format=fmt, **counts)
    return path


def _pymatching(events, correlations=False):
    matching = pymatching.Matching.from_detector_error_model(SPEC.dem(), enable_correlations=correlations)
    return matching.decode_batch(events, enable_correlations=correlations).astype(bool)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_equals_pymatching_bit_for_bit_in_every_format(fmt, shots, circuit_file, tmp_path):
    """Events in ``fmt`` -> predictions in ``fmt`` (read back with Stim) equal PyMatching's on the same
    events, in both modes; the shots make errors and predicted flips, so a constant answer fails."""
    events, _ = shots
    dets = _write(tmp_path / f"dets.{fmt}", events, fmt, num_detectors=SPEC.circuit().num_detectors)
    for decoder, correlations in (("matching", False), ("matching-correlated", True)):
        out = tmp_path / f"{decoder}.{fmt}"
        assert main(["decode", "--circuit", str(circuit_file), "--in", str(dets), "--out", str(out),
                     "--decoder", decoder]) == 0
        ours = stim.read_shot_data_file(path=str(out), format=fmt, num_observables=1)
        expected = _pymatching(events, correlations)
        assert expected.any() and np.array_equal(ours, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reading_in_chunks_equals_stims_whole_file_reader(fmt, shots, tmp_path):
    events, _ = shots
    path = _write(tmp_path / f"dets.{fmt}", events, fmt, num_detectors=events.shape[1])
    chunks = list(read_shots(path, fmt, events.shape[1], chunk_shots=128))
    assert [len(c) for c in chunks] == [128] * 5
    whole = stim.read_shot_data_file(path=str(path), format=fmt, num_detectors=events.shape[1], bit_packed=True)
    assert np.array_equal(np.concatenate(chunks), whole)


def test_obs_in_reports_ler_of_both_matching_modes_on_the_same_shots(shots, circuit_file, tmp_path):
    events, obs = shots
    dets = _write(tmp_path / "dets.01", events, "01", num_detectors=events.shape[1])
    truth = _write(tmp_path / "obs.dets", obs, "dets", num_observables=1)
    report = tmp_path / "r.json"
    assert main(["decode", "--circuit", str(circuit_file), "--in", str(dets), "--out", str(tmp_path / "p.b8"),
                 "--obs-in", str(truth), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    errors = {correlations: int(np.any(_pymatching(events, correlations) != obs, axis=1).sum())
              for correlations in (False, True)}
    assert result["shots"] == SHOTS and result["errors"] == result["baseline_errors"] == errors[False] > 0
    assert result["correlated_errors"] == errors[True]
    assert result["correlated_ratio"] == pytest.approx(errors[False] / errors[True])
    assert result["ler_ci"][0] < result["ler"] < result["ler_ci"][1]


def _refused(argv, capsys, expected: str, out) -> None:
    """The command exits 2 with one line naming ``expected``, and leaves no output (not even a partial file)."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not any(out.parent.glob(f"*{out.name}*"))


def test_a_file_of_another_circuits_shots_is_refused(shots, tmp_path, capsys):
    """641 shots of the d=3 circuit (3 bytes each in b8) are no whole number of the d=5 circuit's 15-byte records."""
    events, _ = shots
    dets = _write(tmp_path / "d3.b8", np.concatenate([events, events[:1]]), "b8", num_detectors=events.shape[1])
    d5 = tmp_path / "d5.stim"
    CodeSpec(5, 5, 0.01).circuit().to_file(d5)
    out = tmp_path / "out.01"
    _refused(["decode", "--circuit", str(d5), "--in", str(dets), "--out", str(out)], capsys,
             "1923 bytes is not a whole number of b8 records of 120 bits", out)


@pytest.mark.parametrize("fmt, cut, expected", [("r8", 1, "stops short of 24 bits"), ("01", 3, "01 records of 24 bits"),
                                                ("hits", 1, "no end of line"), ("ptb64", 8, "ptb64 records of 24 bits")])
def test_a_truncated_file_is_refused_and_writes_nothing(fmt, cut, expected, shots, circuit_file, tmp_path, capsys):
    events, _ = shots
    path = _write(tmp_path / f"dets.{fmt}", events, fmt, num_detectors=events.shape[1])
    path.write_bytes(path.read_bytes()[:-cut])
    out = tmp_path / "out.b8"
    _refused(["decode", "--circuit", str(circuit_file), "--in", str(path), "--out", str(out)], capsys, expected, out)


def test_a_bad_record_late_in_the_file_leaves_no_output(shots, circuit_file, tmp_path, capsys):
    """The first chunks decode fine; a detector index out of range in the last one stops the command, and
    the partial output is removed."""
    events, _ = shots
    path = _write(tmp_path / "dets.hits", np.concatenate([events] * 110), "hits", num_detectors=events.shape[1])
    path.write_bytes(path.read_bytes() + b"3,99\n")
    out = tmp_path / "out.01"
    _refused(["decode", "--circuit", str(circuit_file), "--in", str(path), "--out", str(out)], capsys,
             "not a hits file of 24-bit shots", out)


def test_unknown_formats_and_neural_decoders_without_a_circuit_are_refused(shots, tmp_path, capsys):
    events, _ = shots
    dets = _write(tmp_path / "dets.b8", events, "b8", num_detectors=events.shape[1])
    dem = tmp_path / "d3.dem"
    SPEC.dem().to_file(dem)
    out = tmp_path / "out.txt"
    _refused(["decode", "--dem", str(dem), "--in", str(dets), "--out", str(out)], capsys,
             "give --out-format: the extension of", out)
    _refused(["decode", "--dem", str(dem), "--in", str(dets), "--in-format", "b9", "--out", str(out), "--out-format",
              "01"], capsys, "unknown shot data format 'b9'; expected one of b8, 01", out)
    _refused(["decode", "--dem", str(dem), "--in", str(dets), "--out", str(out), "--out-format", "01", "--decoder",
              "guided-matching"], capsys, "a DEM alone carries no circuit", out)
