"""Device noise files: per-qubit and per-coupler rates inserted layer by layer; ``nqec circuit``."""

import json

import pytest
import stim

from decoder import CodeSpec
from decoder.device_noise import DeviceNoise
from decoder.errors import NqecError
from nqec.cli import main


def _rates_on(circuit: stim.Circuit, name: str, targets: tuple[int, ...]) -> list[float]:
    """The probability of every ``name`` instruction that acts on exactly ``targets`` (a qubit or a pair)."""
    found = []
    for inst in circuit.flattened():
        if inst.name != name:
            continue
        values = [t.value for t in inst.targets_copy()]
        groups = [tuple(values[i: i + len(targets)]) for i in range(0, len(values), len(targets))]
        found += [inst.gate_args_copy()[0] for group in groups if sorted(group) == sorted(targets)]
    return found


def _qubit(circuit: stim.Circuit, x: float, y: float) -> int:
    return next(q for q, c in circuit.get_final_qubit_coordinates().items() if tuple(c) == (x, y))


@pytest.mark.parametrize("basis", ["z", "x"])
def test_device_circuit_is_the_noiseless_experiment_plus_noise(basis):
    noisy = DeviceNoise.from_file("example").circuit(5, 4, basis)
    noiseless = stim.Circuit.generated(f"surface_code:rotated_memory_{basis}", distance=5, rounds=4)
    assert noisy.without_noise() == noiseless
    assert noisy.get_detector_coordinates() == noiseless.get_detector_coordinates()
    assert noisy.num_observables == noiseless.num_observables == 1


def test_listed_hot_qubits_and_couplers_get_their_rates_and_the_rest_the_defaults():
    rounds = 4
    circuit = DeviceNoise.from_file("example").circuit(5, rounds, "z")
    hot_ancilla, data, coupled = _qubit(circuit, 4, 4), _qubit(circuit, 3, 3), _qubit(circuit, 5, 5)
    assert sorted(_rates_on(circuit, "X_ERROR", (hot_ancilla,))) == [0.002] * (rounds + 1) + [0.04] * rounds  # reset, readout
    assert _rates_on(circuit, "DEPOLARIZE2", (hot_ancilla, coupled)) == [0.02] * rounds
    # the defective data qubit idles at its own rates (gate layers 0.002, measure layers 0.012)
    assert sorted(set(_rates_on(circuit, "DEPOLARIZE1", (data,)))) == [0.002, 0.012]
    # an unlisted qubit and coupler: the defaults
    plain = _qubit(circuit, 1, 1)
    assert set(_rates_on(circuit, "DEPOLARIZE1", (plain,))) == {0.0002, 0.0015}
    assert sorted(_rates_on(circuit, "X_ERROR", (plain,))) == [0.002, 0.004]  # initial reset, final readout
    assert set(_rates_on(circuit, "DEPOLARIZE2", (_qubit(circuit, 2, 2), plain))) == {0.003}


@pytest.mark.parametrize("basis", ["z", "x"])
@pytest.mark.parametrize("round_data", [0.002, 0.0])
def test_a_uniform_file_equal_to_the_depolarizing_model_gives_its_dem(basis, round_data):
    """round_data 0 is the planted fault: without the per-round data depolarization the DEMs differ."""
    p = 0.002
    noise = DeviceNoise.from_dict({"default": {"gate1": p, "gate2": p, "reset": p, "readout": p,
                                               "round_data": round_data}})
    dem = noise.circuit(5, 3, basis).detector_error_model(decompose_errors=True)
    expected = CodeSpec(5, 3, p, basis=basis).dem()
    assert dem.approx_equals(expected, atol=1e-12) == (round_data == p)


def test_a_uniform_si1000_file_gives_the_si1000_dem():
    """(SI1000 also idles the circuit's unused qubit indices, which no DEM sees.)"""
    p = 0.002
    noise = DeviceNoise.from_dict({"default": {"gate1": p / 10, "idle": p / 10, "idle_measure": 2 * p, "reset": 2 * p,
                                               "readout": 5 * p, "gate2": p}})
    dem = noise.circuit(3, 3, "x").detector_error_model(decompose_errors=True)
    assert dem.approx_equals(CodeSpec(3, 3, p, basis="x", noise="si1000").dem(), atol=1e-12)


@pytest.mark.parametrize("data, expected", [
    ({"defaults": {}}, "unknown key 'defaults'; expected one of description, default, qubits, couplers"),
    ({"default": {"readot": 0.01}}, "[default]: unknown key 'readot'; expected one of gate1, idle"),
    ({"default": {"readout": 0.5}}, "[default]: readout: expected a probability in [0, 0.5), got 0.5"),
    ({"default": {"gate2": -0.1}}, "[default]: gate2: expected a probability in [0, 0.5), got -0.1"),
    ({"default": {"idle": "0.01"}}, "[default]: idle: expected a probability in [0, 0.5), got '0.01'"),
    ({"qubits": {"3;3": {"idle": 0.01}}}, "expected qubit coordinates 'x,y' (two numbers), got '3;3'"),
    ({"qubits": {"3,3": {"gate2": 0.01}}}, '[qubits."3,3"]: unknown key \'gate2\''),
    ({"qubits": {"3,3": 0.01}}, '[qubits."3,3"]: expected a table, got float 0.01'),
    ({"couplers": {"3,3": {"gate2": 0.01}}}, "expected a coupler named 'x1,y1-x2,y2', got '3,3'"),
    ({"couplers": {"3,3-4,x": {"gate2": 0.01}}}, "expected qubit coordinates 'x,y' (two numbers), got '4,x'"),
    ({"couplers": {"3,3-4,4": {}}}, '[couplers."3,3-4,4"]: gate2: expected a probability in [0, 0.5), got None'),
])
def test_bad_noise_files_give_one_line_errors_naming_the_key(data, expected):
    with pytest.raises(NqecError) as error:
        DeviceNoise.from_dict(data, source="dev.toml")
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_nqec_circuit_writes_files_that_stim_reads_back(tmp_path, capsys):
    noise_file = tmp_path / "device.json"
    noise_file.write_text(json.dumps({"default": {"gate2": 0.003, "readout": 0.01},
                                      "qubits": {"4,4": {"readout": 0.05}}}))
    out = tmp_path / "c.stim"
    assert main(["circuit", "-d", "5", "-r", "7", "--basis", "x", "--noise-file", str(noise_file),
                 "--out", str(out)]) == 0
    assert stim.Circuit.from_file(out) == DeviceNoise.from_file(noise_file).circuit(5, 7, "x")
    assert "wrote" in capsys.readouterr().out
    assert main(["circuit", "-d", "3", "--noise", "si1000", "-p", "0.002", "--out", str(out)]) == 0
    assert stim.Circuit.from_file(out) == CodeSpec(3, 3, 0.002, noise="si1000").circuit()


def test_nqec_circuit_refuses_a_bad_noise_file_in_one_line(tmp_path, capsys):
    noise_file = tmp_path / "device.toml"
    noise_file.write_text("[default]\nreadout = 0.7\n")
    assert main(["circuit", "--noise-file", str(noise_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "readout: expected a probability in [0, 0.5), got 0.7" in err
