"""Edge probabilities learned from detection events: accuracy, ranking, structure, errors, CLI."""

from __future__ import annotations

import numpy as np
import pymatching
import pytest
import stim

from decoder import CodeSpec, NqecError
from decoder.noise_estimate import DemGraph, EdgeAccumulator, estimate_edges, reweighted_dem
from training.bench_drift import Drift

SPEC = CodeSpec(3, 3, 0.01)


@pytest.fixture(scope="module")
def nominal_events() -> np.ndarray:
    return SPEC.circuit().compile_detector_sampler(seed=11).sample(200_000, bit_packed=True)


def test_recovers_known_edge_probabilities(nominal_events):
    """200k shots, p=0.01, d=3: edges of p >= 1e-3 within 5% median, 20% worst; the jackknife
    error is honest (median |error| / stderr near 0.67, the normal's median |z|)."""
    estimate = estimate_edges(SPEC.dem(), nominal_events, shrink=False)
    big = estimate.nominal >= 1e-3
    relative = np.abs(estimate.p / estimate.nominal - 1)[big]
    assert np.median(relative) < 0.05 and relative.max() < 0.2
    z = np.abs(estimate.p - estimate.nominal)[big] / estimate.stderr[big]
    assert 0.4 < np.median(z) < 1.0


def test_hot_spot_is_ranked_first():
    circuit = Drift("hot-spot", 0.03).apply(SPEC.circuit())
    events = circuit.compile_detector_sampler(seed=12).sample(50_000, bit_packed=True)
    estimate = estimate_edges(SPEC.dem(), events)
    true = DemGraph.from_dem(circuit.detector_error_model(decompose_errors=True))
    true_p = dict(zip(map(tuple, true.detectors), true.edge_p(true.mechanism_p)))
    ratios = np.array([true_p.get(tuple(e), 0) for e in estimate.detectors]) / estimate.nominal
    top = estimate.top_departures(3)
    assert top[0]["ratio"] > 3
    assert ratios[top[0]["edge"]] > 3 and all(ratios[row["edge"]] > 2 for row in top)


def test_reweighted_dem_keeps_the_structure(nominal_events):
    dem = SPEC.dem()
    new = reweighted_dem(dem, estimate_edges(dem, nominal_events))
    old_errors = [i for i in dem.flattened() if i.type == "error"]
    new_errors = [i for i in new.flattened() if i.type == "error"]
    assert len(new_errors) == len(old_errors) == dem.num_errors
    assert [i.targets_copy() for i in new_errors] == [i.targets_copy() for i in old_errors]
    assert (new.num_detectors, new.num_observables) == (dem.num_detectors, dem.num_observables)
    assert new.get_detector_coordinates() == dem.get_detector_coordinates()
    assert all(0 < i.args_copy()[0] < 0.5 for i in new_errors)
    assert [i.args_copy() for i in new_errors] != [i.args_copy() for i in old_errors]


def test_accumulator_forgets_the_old_noise():
    """After the noise changes, a short half-life follows it; the estimate drifts to the new rates."""
    hot = Drift("readout", 0.1).apply(SPEC.circuit())
    accumulator = EdgeAccumulator(SPEC.dem(), half_life=5_000)
    accumulator.update(SPEC.circuit().compile_detector_sampler(seed=13).sample(20_000))
    before = accumulator.estimate().departure().max()
    for seed in range(4):
        accumulator.update(hot.compile_detector_sampler(seed=14 + seed).sample(10_000))
    assert before < 0.5 < accumulator.estimate().departure().max()
    assert accumulator.shots < 0.5 * 60_000


@pytest.mark.parametrize("events, message", [
    (np.zeros((5000, 7), dtype=bool), "expected bool [shots, 24]"),
    (np.zeros((999, 24), dtype=bool), "need at least 1000 shots"),
])
def test_inconsistent_inputs_are_one_line_errors(events, message):
    with pytest.raises(NqecError, match=message.replace("[", r"\[")) as error:
        estimate_edges(SPEC.dem(), events)
    assert "\n" not in str(error.value)


def test_estimate_of_another_dem_is_refused(nominal_events):
    estimate = estimate_edges(SPEC.dem(), nominal_events[:5000])
    with pytest.raises(NqecError, match="not this DEM's"):
        reweighted_dem(CodeSpec(3, 5, 0.01).dem(), estimate)


def test_cli_writes_a_dem_stim_and_pymatching_read(tmp_path):
    from nqec.cli import main

    events_path, dem_path, plot_path = tmp_path / "dets.b8", tmp_path / "est.dem", tmp_path / "hot.png"
    circuit = Drift("hot-spot", 0.03).apply(SPEC.circuit())
    events = circuit.compile_detector_sampler(seed=15).sample(20_000)
    stim.write_shot_data_file(data=events, path=str(events_path), format="b8", num_detectors=SPEC.dem().num_detectors)
    assert main(["noise", "estimate", "-d", "3", "-r", "3", "-p", "0.01", "--in", str(events_path),
                 "--out", str(dem_path), "--json", str(tmp_path / "e.json"), "--plot", str(plot_path)]) == 0
    dem = stim.DetectorErrorModel.from_file(str(dem_path))
    assert dem.num_errors == SPEC.dem().num_errors
    assert pymatching.Matching.from_detector_error_model(dem).num_detectors == SPEC.dem().num_detectors
    assert plot_path.stat().st_size > 10_000
    assert main(["noise", "estimate", "-d", "5", "-r", "3", "-p", "0.01", "--in", str(events_path),
                 "--out", str(dem_path)]) == 2


def test_noise_compare_measures_guided_matching_with_each_dem_as_its_prior(tmp_path):
    """d=3 hot spot, DEM learned from 50,000 shots, the same 30,000 fresh shots for every decoder (guided
    predecoder-fpga: 416 errors with the nominal prior, 323 estimated, 335 true). Tolerance: the estimated
    prior within 1.1x of the true one's errors, the nominal prior at least 1.15x."""
    import json

    from nqec.cli import main

    out = tmp_path / "compare.json"
    assert main(["noise", "compare", "-d", "3", "-r", "3", "-p", "0.003", "--train-shots", "50000", "--shots", "30000",
                 "--model", "predecoder-fpga", "--json", str(out)]) == 0
    guided = json.loads(out.read_text())["decoders"]["guided predecoder-fpga"]
    assert guided["true"]["errors"] > 200, guided
    assert guided["estimated"]["vs_true"]["ratio"] <= 1.1 and guided["nominal"]["vs_true"]["ratio"] >= 1.15, guided


def test_a_y_error_grown_alone_is_told_apart_from_the_x_and_z_errors_on_its_edges():
    """Three mechanisms: X on edge (0, 1), Z on edge (2, 3), and Y = both, decomposed. Only Y grows
    (0.01 -> 0.05): the pair across its pieces, (0, 2), says so, and the fit puts the growth on Y alone
    (without it, each edge's growth is shared with X or Z in nominal proportions). 200,000 shots;
    tolerance 10% of each true probability."""
    nominal = stim.DetectorErrorModel("error(0.01) D0 D1\nerror(0.01) D2 D3\nerror(0.01) D0 D1 ^ D2 D3")
    truth = stim.DetectorErrorModel("error(0.01) D0 D1\nerror(0.01) D2 D3\nerror(0.05) D0 D1 ^ D2 D3")
    events, _, _ = truth.compile_sampler(seed=4).sample(200_000)
    fitted = estimate_edges(nominal, events, shrink=False).mechanism_p
    assert np.allclose(fitted, [0.01, 0.01, 0.05], rtol=0.1), fitted


def test_a_few_thousand_nominal_shots_do_not_make_rare_edges_vanish():
    """3,000 nominal d=5 shots: some rare edges fire in no block, and a jackknife alone would keep
    their estimate at ~0 (16 of 502 edges below a tenth of nominal); the binomial floor of the
    shrinkage keeps every edge above a tenth of nominal."""
    spec = CodeSpec(5, 5, 0.003)
    estimate = estimate_edges(spec.dem(), spec.circuit().compile_detector_sampler(seed=5).sample(3000))
    assert int((estimate.p < estimate.nominal / 10).sum()) == 0
