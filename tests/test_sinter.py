import numpy as np
import pymatching
import sinter

from decoder import CodeSpec
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
