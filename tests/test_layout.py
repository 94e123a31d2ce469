import numpy as np
import pytest

from decoder import CodeSpec, Layout, NqecError
from decoder.events import pack_bits

CASES = [(d, r, basis) for d in range(3, 16, 2) for r in range(1, d + 3) for basis in ("z", "x")]


@pytest.mark.parametrize("d, r, basis", CASES)
def test_layout_round_trips_bool_and_bit_packed(d, r, basis):
    circuit = CodeSpec(d, r, 0.001, basis=basis).circuit()
    layout = Layout.from_circuit(circuit)
    n = circuit.num_detectors
    assert layout.shape == (2, r + 1, d + 1, d + 1)
    assert layout.num_detectors == n
    assert len(np.unique(layout.flat_index)) == n

    events = np.random.default_rng(d * 100 + r).random((4, n)) < 0.3
    dense = layout.to_dense(events)
    assert dense.shape == (4, *layout.shape)
    assert dense.sum() == events.sum()
    assert np.array_equal(layout.from_dense(dense), events)
    assert np.array_equal(layout.to_dense(pack_bits(events)), dense)

    # Each stabilizer type holds (d^2-1)/2 stabilizers in every full round.
    half = (d * d - 1) // 2
    per_type_round = np.zeros((2, r + 1), dtype=int)
    np.add.at(per_type_round, (layout.type_index, layout.t_index), 1)
    basis_type = 1 if basis == "z" else 0
    assert per_type_round[basis_type].tolist() == [half] * (r + 1)
    assert per_type_round[1 - basis_type].tolist() == [0] + [half] * (r - 1) + [0]


def test_stabilizer_types_agree_with_the_dem():
    """A Z-basis memory's first round and final readout see only Z stabilizers (type 1)."""
    spec = CodeSpec(5, 3, 0.001, basis="z")
    layout = Layout.from_circuit(spec.circuit())
    first_or_last = (layout.t_index == 0) | (layout.t_index == spec.rounds)
    assert np.all(layout.type_index[first_or_last] == 1)


def test_layout_serializes():
    layout = Layout.from_circuit(CodeSpec(5, 5, 0.001).circuit())
    assert Layout.from_dict(layout.to_dict()) == layout


def test_layout_rejects_wrong_shapes():
    layout = Layout.from_circuit(CodeSpec(3, 3, 0.001).circuit())
    with pytest.raises(NqecError, match=r"bool \[shots, 24\] or bit-packed uint8 \[shots, 3\]"):
        layout.to_dense(np.zeros((2, 23), dtype=bool))
    with pytest.raises(NqecError, match=r"dense events of shape \[shots, 2, 4, 4, 4\]"):
        layout.from_dense(np.zeros((2, 2, 4, 4), dtype=np.float32))
