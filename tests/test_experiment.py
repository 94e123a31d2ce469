"""A circuit file is an experiment: the same decisions as its spec, matching on any circuit, neural
pipelines only on rotated surface-code memory circuits they can read, and --decoder-dem."""

import json

import numpy as np
import pymatching
import pytest
import stim

from decoder import CodeSpec
from decoder.errors import NqecError
from decoder.experiment import CircuitSpec, experiment_from_dict, with_dem
from nqec.cli import main

SPEC = CodeSpec(5, 5, 0.003)


@pytest.fixture
def circuit_file(tmp_path):
    path = tmp_path / "d5.stim"
    SPEC.circuit().to_file(path)
    return path


def _evaluate(argv, tmp_path, name):
    out = tmp_path / f"{name}.json"
    assert main(["evaluate", *argv, "--seed", "4", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _errors(circuit, dem, shots, seed, correlations=False):
    """Logical errors of PyMatching (on ``dem``) on the shots evaluate samples from ``circuit`` at ``seed``."""
    events, obs = circuit.compile_detector_sampler(seed=seed).sample(shots, separate_observables=True, bit_packed=True)
    matching = pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlations)
    predicted = matching.decode_batch(events, bit_packed_shots=True, enable_correlations=correlations)
    return int(np.any(predicted.astype(bool) != np.unpackbits(obs, axis=1, count=1, bitorder="little"), axis=1).sum())


@pytest.mark.parametrize("decoder", [["--decoder", "matching"], ["--decoder", "guided-matching", "--model", "predecoder-d5"]])
def test_a_spec_written_to_a_file_decodes_as_the_spec(decoder, circuit_file, tmp_path):
    """Same seed, same shots, same error counts for the decoder and both PyMatching modes."""
    shots = ["--shots", "4000"]
    by_file = _evaluate([*decoder, "--circuit", str(circuit_file), *shots], tmp_path, "file")
    by_spec = _evaluate([*decoder, "-d", "5", "-r", "5", "-p", "0.003", *shots], tmp_path, "spec")
    for key in ("errors", "baseline_errors", "correlated_errors", "disagreements", "correlated_disagreements"):
        assert by_file[key] == by_spec[key], key
    assert by_file["baseline_errors"] > by_file["correlated_errors"] > 0
    assert by_file["spec"]["circuit_file"] == str(circuit_file) and by_file["spec"]["distance"] == 5
    assert "d5.stim (d=5 r=5 Z-basis)" == by_file["spec"]["label"]


def _no_coordinates(tmp_path):
    path = tmp_path / "rep.stim"
    stim.Circuit.generated("repetition_code:memory", distance=5, rounds=5, after_clifford_depolarization=0.03,
                           before_measure_flip_probability=0.03).to_file(path)
    return path


def _unrotated(tmp_path):
    path = tmp_path / "unrotated.stim"
    stim.Circuit.generated("surface_code:unrotated_memory_z", distance=3, rounds=3,
                           after_clifford_depolarization=0.003).to_file(path)
    return path


def _unseen_direction(tmp_path):
    """The d=5 spec's circuit plus one correlated error on two far corners: a Z-Z edge 4 cells long."""
    text = str(SPEC.circuit())
    at = text.index("TICK")
    path = tmp_path / "odd.stim"
    path.write_text(text[:at] + "CORRELATED_ERROR(0.002) X1 X9\n" + text[at:])
    return path


@pytest.mark.parametrize("make, expected", [
    (_no_coordinates, "its detectors need (x, y, t) coordinates; 24 of its 24 detectors have fewer"),
    (_unrotated, "a different code: 36 detectors on a 5x5 grid of ancillas"),
    (_unseen_direction, "model 'predecoder-d5' has never seen 1 edge direction (Z-Z (dt, dy, dx)=(0, 0, 4))"),
])
def test_neural_pipelines_refuse_circuits_they_cannot_read_and_matching_decodes_them(make, expected, tmp_path,
                                                                                    capsys):
    path = make(tmp_path)
    assert main(["evaluate", "--circuit", str(path), "--decoder", "guided-matching", "--model", "predecoder-d5",
                 "--shots", "100"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    result = _evaluate(["--circuit", str(path), "--decoder", "matching", "--shots", "3000"], tmp_path, "matching")
    circuit = stim.Circuit.from_file(str(path))
    dem = CircuitSpec.from_file(path).dem()
    assert result["errors"] == _errors(circuit, dem, 3000, result["seed"]) > 0
    assert result["correlated_errors"] == _errors(circuit, dem, 3000, result["seed"], correlations=True)


def test_decoder_dem_weights_the_decoder_under_test_and_the_baselines_keep_the_true_dem(circuit_file, tmp_path):
    """Matching on an estimated DEM (the true one with every probability scaled by a random factor) errs
    as PyMatching on that DEM does on the same shots; both baselines are PyMatching on the true DEM."""
    rng = np.random.default_rng(3)
    estimated = stim.DetectorErrorModel()
    for instruction in SPEC.dem().flattened():
        if instruction.type == "error":
            scaled = min(0.4, instruction.args_copy()[0] * float(np.exp(rng.normal(0, 1.5))))
            estimated.append("error", scaled, instruction.targets_copy())
        else:
            estimated.append(instruction)
    dem_file = tmp_path / "estimated.dem"
    estimated.to_file(dem_file)
    for decoder, correlations in (("matching", False), ("matching-correlated", True)):
        result = _evaluate(["--circuit", str(circuit_file), "--decoder", decoder, "--decoder-dem", str(dem_file),
                            "--shots", "6000"], tmp_path, decoder)
        seed = result["seed"]
        assert result["errors"] == _errors(SPEC.circuit(), estimated, 6000, seed, correlations)
        assert result["baseline_errors"] == _errors(SPEC.circuit(), SPEC.dem(), 6000, seed)
        assert result["correlated_errors"] == _errors(SPEC.circuit(), SPEC.dem(), 6000, seed, correlations=True)
        assert result["errors"] > result["correlated_errors"]  # the scaled weights cost accuracy
        assert f"{decoder} (decoder DEM)" in result["records"] and result["decoder_dem"]["dem_file"] == str(dem_file)


def test_a_decoder_dem_of_another_structure_is_refused(circuit_file, tmp_path, capsys):
    other = tmp_path / "d5r3.dem"
    CodeSpec(5, 3, 0.003).dem().to_file(other)
    assert main(["evaluate", "--circuit", str(circuit_file), "--decoder-dem", str(other), "--shots", "100"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the given DEM has 72 detectors and 1 observables; the experiment's has 120" in lines[0]
    fewer = stim.DetectorErrorModel()
    for instruction in SPEC.dem().flattened():
        if not (instruction.type == "error" and stim.target_relative_detector_id(0) in instruction.targets_copy()):
            fewer.append(instruction)  # every error but those flipping D0
    with pytest.raises(NqecError, match=r"other edges than the experiment's: \d+ only in the experiment's"):
        with_dem(SPEC, fewer)


def test_circuit_spec_infers_its_geometry_and_records_path_and_hash(tmp_path):
    path = tmp_path / "x.stim"
    stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=7,
                           after_clifford_depolarization=0.001).to_file(path)
    spec = CircuitSpec.from_file(path)
    assert (spec.distance, spec.rounds, spec.basis, spec.family) == (3, 7, "x", "rotated_surface")
    assert spec.same_geometry(CodeSpec(3, 7, 0.002, basis="x")) and not spec.same_geometry(CodeSpec(3, 7, 0.002))
    record = spec.to_dict()
    assert set(record) >= {"circuit_file", "sha256"} and len(json.dumps(record)) < 400
    assert experiment_from_dict(json.loads(json.dumps(record))) == spec
    path.write_text(path.read_text() + "\nX_ERROR(0.1) 0\n")
    with pytest.raises(NqecError, match="changed since it was recorded"):
        experiment_from_dict(record)


def test_circuit_and_spec_flags_do_not_mix(circuit_file, capsys):
    assert main(["evaluate", "--circuit", str(circuit_file), "-d", "3", "-p", "0.001"]) == 2
    assert "--circuit is the whole experiment; drop -d, -p" in capsys.readouterr().err
