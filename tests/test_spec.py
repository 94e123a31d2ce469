import pytest
import stim

from decoder import CodeSpec, NqecError
from decoder.noise import add_si1000_noise


@pytest.mark.parametrize("kwargs, expected", [
    (dict(distance=4, rounds=3, p=0.001), "odd integer >= 3"),
    (dict(distance=1, rounds=3, p=0.001), "odd integer >= 3"),
    (dict(distance=3, rounds=0, p=0.001), "rounds must be an integer >= 1"),
    (dict(distance=3, rounds=3, p=0.0), r"\(0, 0.5\)"),
    (dict(distance=3, rounds=3, p=0.5), r"\(0, 0.5\)"),
    (dict(distance=3, rounds=3, p=float("nan")), r"\(0, 0.5\)"),
    (dict(distance=3, rounds=3, p=0.001, basis="y"), "basis must be one of"),
    (dict(distance=3, rounds=3, p=0.001, noise="biased"), "noise model must be one of"),
    (dict(distance=3, rounds=3, p=0.001, family="color"), "family must be one of"),
])
def test_bad_specs_name_what_was_expected(kwargs, expected):
    with pytest.raises(NqecError, match=expected):
        CodeSpec(**kwargs)


@pytest.mark.parametrize("noise", ["depolarizing", "si1000"])
@pytest.mark.parametrize("basis", ["z", "x"])
def test_circuit_has_one_detector_per_stabilizer_and_round(noise, basis):
    d, r = 5, 4
    circuit = CodeSpec(d, r, 0.002, basis=basis, noise=noise).circuit()
    half = (d * d - 1) // 2
    # First round: only the basis's stabilizers are deterministic; then all; then the final data readout.
    assert circuit.num_detectors == half + (r - 1) * 2 * half + half
    assert circuit.num_observables == 1
    # The DEM is graphlike after decomposition, so matching can use it.
    dem = CodeSpec(d, r, 0.002, basis=basis, noise=noise).dem()
    assert dem.num_detectors == circuit.num_detectors


def test_spec_round_trips_through_dict():
    spec = CodeSpec(7, 3, 0.004, basis="x", noise="si1000")
    assert CodeSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(NqecError, match="unknown code spec keys"):
        CodeSpec.from_dict({**spec.to_dict(), "colour": 1})


def test_si1000_places_each_noise_channel_at_its_strength():
    p = 0.001
    noisy = add_si1000_noise(stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2), p)
    strengths: dict[str, set[float]] = {}
    for inst in noisy.flattened():
        if inst.name in ("DEPOLARIZE1", "DEPOLARIZE2", "X_ERROR", "Z_ERROR"):
            strengths.setdefault(inst.name, set()).add(round(inst.gate_args_copy()[0], 12))
    assert strengths["DEPOLARIZE2"] == {p}
    assert strengths["DEPOLARIZE1"] == {round(p / 10, 12), round(2 * p, 12)}  # gates/idle, resonator idle
    assert strengths["X_ERROR"] == {round(2 * p, 12), round(5 * p, 12)}  # reset, measurement
    # Noise must not change the experiment: the noiseless reference sample has no detection events.
    assert not noisy.without_noise().compile_detector_sampler().sample(10).any()


def test_si1000_refuses_a_noisy_circuit():
    with pytest.raises(ValueError, match="noiseless"):
        add_si1000_noise(CodeSpec(3, 3, 0.001).circuit(), 0.001)


def test_si1000_is_harsher_than_depolarizing_at_same_p():
    # SI1000 measures with 5p flips, so its DEM has more total error probability.
    def total_probability(spec):
        return sum(inst.args_copy()[0] for inst in spec.dem().flattened() if inst.type == "error")
    assert total_probability(CodeSpec(3, 3, 0.002, noise="si1000")) > total_probability(CodeSpec(3, 3, 0.002))
