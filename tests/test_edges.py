import numpy as np
import pytest

from decoder import CodeSpec, Layout, NqecError
from decoder.edges import BOUNDARY, EdgeTable

CASES = [(d, basis, noise) for d in (3, 5, 7, 9, 11) for basis in ("z", "x") for noise in ("depolarizing", "si1000")]


@pytest.mark.parametrize("d, basis, noise", CASES)
def test_true_edges_reproduce_events_and_observables_exactly(d, basis, noise):
    spec = CodeSpec(d, d, 0.004, basis=basis, noise=noise)
    table = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
    events, obs, errors = spec.dem().compile_sampler(seed=d).sample(300, return_errors=True)
    labels = table.labels(errors)
    det_flips, obs_flips = table.apply(labels)
    assert np.array_equal(det_flips, events)
    assert np.array_equal(obs_flips, obs)
    assert labels.any()


@pytest.mark.parametrize("d", [3, 5, 9])
def test_each_anchor_cell_has_at_most_one_edge_per_direction(d):
    spec = CodeSpec(d, d, 0.003)
    table = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
    assert len(set(zip(table.anchor.tolist(), table.direction.tolist()))) == table.num_edges
    boundary = table.detectors[:, 1] < 0
    assert all(table.directions[k][1] == BOUNDARY for k in table.direction[boundary])


def test_direction_set_is_shared_across_distances():
    """The vocabulary learned at d=5 covers every edge at d=9 and d=13 (translation invariance)."""
    small = CodeSpec(5, 5, 0.003)
    directions = EdgeTable.from_dem(small.dem(), Layout.from_circuit(small.circuit())).directions
    for d in (9, 13):
        big = CodeSpec(d, d, 0.003)
        table = EdgeTable.from_dem(big.dem(), Layout.from_circuit(big.circuit()), directions)
        assert (table.direction >= 0).all()


def test_without_conflicts_drops_edges_sharing_a_detector():
    spec = CodeSpec(3, 3, 0.003)
    table = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
    shared = np.flatnonzero((table.incidence[:, table.detectors[0, 0]].toarray().ravel()) > 0)[:2]
    lonely = next(e for e in range(table.num_edges)
                  if not set(table.detectors[e]) & set(table.detectors[shared].ravel()) - {-1})
    selected = np.zeros((1, table.num_edges), dtype=bool)
    selected[0, shared] = True
    selected[0, lonely] = True
    kept = table.without_conflicts(selected)
    assert not kept[0, shared].any() and kept[0, lonely]


def test_layout_and_dem_must_agree():
    with pytest.raises(NqecError, match="layout has 24 detectors, DEM has 120"):
        EdgeTable.from_dem(CodeSpec(5, 5, 0.003).dem(), Layout.from_circuit(CodeSpec(3, 3, 0.003).circuit()))
