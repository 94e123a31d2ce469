import numpy as np
import pymatching
import pytest
import sinter
import stim

from decoder import CodeSpec
from decoder.errors import NqecError
from decoder.events import unpack_bits
from decoder.sinter_decoders import NqecSinterDecoder, sinter_decoders


def test_compiled_decoder_equals_pymatching_bit_for_bit():
    spec = CodeSpec(5, 3, 0.006, basis="x")
    events, _ = spec.circuit().compile_detector_sampler(seed=2).sample(3000, separate_observables=True, bit_packed=True)
    compiled = NqecSinterDecoder("matching").compile_decoder_for_dem(dem=spec.dem())
    ours = compiled.decode_shots_bit_packed(bit_packed_detection_event_data=events)
    assert ours.dtype == np.uint8 and ours.shape == (3000, 1)
    direct = pymatching.Matching.from_detector_error_model(spec.dem()).decode_batch(events, bit_packed_shots=True)
    assert np.array_equal(unpack_bits(ours, 1), direct.astype(bool))


def test_sinter_collect_runs_our_decoder_beside_pymatching():
    tasks = [sinter.Task(circuit=CodeSpec(3, 3, 0.01).circuit(), json_metadata={"d": 3, "p": 0.01})]
    stats = sinter.collect(num_workers=1, tasks=tasks, decoders=["nqec-matching", "pymatching"],
                           custom_decoders=sinter_decoders(), max_shots=20_000, max_errors=10_000)
    by_decoder = {s.decoder: s for s in stats}
    assert set(by_decoder) == {"nqec-matching", "pymatching"}
    ours, theirs = by_decoder["nqec-matching"], by_decoder["pymatching"]
    assert ours.shots == theirs.shots == 20_000
    # Same decoder on independent shots: error counts agree within 5 sigma of their difference.
    rate = (ours.errors + theirs.errors) / (2 * 20_000)
    assert abs(ours.errors - theirs.errors) < 5 * np.sqrt(2 * 20_000 * rate * (1 - rate))
    assert ours.errors > 0


def test_correlated_sinter_decoder_equals_pymatching_correlated():
    spec = CodeSpec(5, 5, 0.005)
    events, _ = spec.circuit().compile_detector_sampler(seed=8).sample(3000, separate_observables=True, bit_packed=True)
    compiled = sinter_decoders()["nqec-matching-correlated"].compile_decoder_for_dem(dem=spec.dem())
    ours = unpack_bits(compiled.decode_shots_bit_packed(bit_packed_detection_event_data=events), 1)
    direct = pymatching.Matching.from_detector_error_model(spec.dem(), enable_correlations=True).decode_batch(
        events, bit_packed_shots=True, enable_correlations=True)
    assert np.array_equal(ours, direct.astype(bool))


def test_sinter_collect_decodes_user_circuits_with_nqec_matching(tmp_path):
    """Tasks built from a repetition-code circuit, a colour-code circuit and a surface-code circuit file."""
    from decoder.experiment import CircuitSpec

    path = tmp_path / "d3.stim"
    CodeSpec(3, 3, 0.02).circuit().to_file(path)
    circuits = {"repetition": stim.Circuit.generated("repetition_code:memory", distance=5, rounds=5,
                                                     before_measure_flip_probability=0.1),
                "colour": stim.Circuit.generated("color_code:memory_xyz", distance=3, rounds=3,
                                                 after_clifford_depolarization=0.02),
                "file": CircuitSpec.from_file(path).circuit()}
    tasks = [sinter.Task(circuit=circuit, json_metadata={"name": name}) for name, circuit in circuits.items()]
    stats = sinter.collect(num_workers=1, tasks=tasks, decoders=["nqec-matching", "nqec-matching-correlated"],
                           custom_decoders=sinter_decoders(), max_shots=2000, max_errors=10_000)
    assert sorted((s.json_metadata["name"], s.decoder) for s in stats) == sorted(
        (name, decoder) for name in circuits for decoder in ("nqec-matching", "nqec-matching-correlated"))
    assert all(s.shots == 2000 and 0 < s.errors < 1000 for s in stats)


@pytest.fixture(scope="module")
def neural_sinter_decoder(tmp_path_factory):
    """guided-matching (predecoder-d5) for the d=5 p=0.003 circuit, given as a file."""
    from decoder.experiment import CircuitSpec

    path = tmp_path_factory.mktemp("circuit") / "d5.stim"
    CodeSpec(5, 5, 0.003).circuit().to_file(path)
    return NqecSinterDecoder("guided-matching", spec=CircuitSpec.from_file(path), model="predecoder-d5")


def test_neural_sinter_decoder_refuses_a_task_that_does_not_fit(neural_sinter_decoder):
    repetition = stim.Circuit.generated("repetition_code:memory", distance=5, rounds=5, before_measure_flip_probability=0.1)
    with pytest.raises(NqecError, match="the sinter task's DEM has 24 detectors and 1 observables; d5.stim"):
        neural_sinter_decoder.compile_decoder_for_dem(dem=repetition.detector_error_model(decompose_errors=True))
    other_rounds = CodeSpec(5, 7, 0.003).dem()
    with pytest.raises(NqecError, match="has 168 detectors"):
        neural_sinter_decoder.compile_decoder_for_dem(dem=other_rounds)


def test_neural_sinter_decoder_decodes_a_fitting_task_with_its_probabilities(neural_sinter_decoder):
    """A task at p=0.008 decodes as the bundle's pipeline built for CodeSpec(5, 5, 0.008), not for the
    circuit file's p=0.003 (the two differ on these shots)."""
    from decoder.bundle import Bundle

    task = CodeSpec(5, 5, 0.008)
    dem = task.circuit().detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)  # as sinter
    events = task.circuit().compile_detector_sampler(seed=5).sample(3000, bit_packed=True)
    compiled = neural_sinter_decoder.compile_decoder_for_dem(dem=dem)
    ours = unpack_bits(compiled.decode_shots_bit_packed(bit_packed_detection_event_data=events), 1)
    bundle = Bundle.load("predecoder-d5")
    assert np.array_equal(ours, bundle.decoder(task, pipeline="guided-matching").decode_batch(events))
    assert not np.array_equal(ours, bundle.decoder(CodeSpec(5, 5, 0.003), pipeline="guided-matching").decode_batch(events))
