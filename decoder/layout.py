"""Dense ``[type, t, y, x]`` packing of detection events, derived from the circuit.

Each detector's ``(x, y, t)`` coordinates place it on a grid; its stabilizer type
(X or Z) comes from its ancilla qubit: ancillas that are Hadamard-rotated measure X.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

from decoder.errors import NqecError
from decoder.events import as_bool_events

STABILIZER_TYPES = ("X", "Z")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each detector lives in the dense tensor ``[type, t, y, x]``.

    Example:
        >>> from decoder import CodeSpec
        >>> layout = Layout.from_circuit(CodeSpec(3, 3, 0.001).circuit())
        >>> layout.shape
        (2, 4, 4, 4)
        >>> dense = layout.to_dense(np.ones((1, layout.num_detectors), dtype=bool))
        >>> int(dense.sum()) == layout.num_detectors
        True
    """

    shape: tuple[int, int, int, int]
    type_index: np.ndarray  # [num_detectors] int, 0 = X, 1 = Z
    t_index: np.ndarray
    y_index: np.ndarray
    x_index: np.ndarray
    x_coords: tuple[float, ...]  # the circuit x coordinate of each grid column (ancilla positions)
    y_coords: tuple[float, ...]

    @property
    def num_detectors(self) -> int:
        return len(self.type_index)

    @property
    def flat_index(self) -> np.ndarray:
        """Index of each detector in the flattened dense tensor."""
        return np.ravel_multi_index((self.type_index, self.t_index, self.y_index, self.x_index), self.shape)

    @property
    def mask(self) -> np.ndarray:
        """``bool [type, t, y, x]``: True where a detector lives."""
        mask = np.zeros(int(np.prod(self.shape)), dtype=bool)
        mask[self.flat_index] = True
        return mask.reshape(self.shape)

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> "Layout":
        """Derive the layout from detector coordinates and ancilla bases of a Stim circuit."""
        det_coords = circuit.get_detector_coordinates()
        n = circuit.num_detectors
        if len(det_coords) != n or any(len(c) < 3 for c in det_coords.values()):
            raise NqecError("every detector needs (x, y, t) coordinates to build a layout")
        coords = np.array([det_coords[i][:3] for i in range(n)], dtype=np.float64)
        ancillas = _ancilla_positions(circuit)
        x_coords = np.unique([x for x, _ in ancillas])
        y_coords = np.unique([y for _, y in ancillas])
        x_index = np.searchsorted(x_coords, coords[:, 0])
        y_index = np.searchsorted(y_coords, coords[:, 1])
        if any((c[0], c[1]) not in ancillas for c in coords):
            raise NqecError("every detector must sit at an ancilla qubit's (x, y) coordinates to build a layout")
        t_values, t_index = np.unique(coords[:, 2], return_inverse=True)
        if not np.array_equal(t_values, np.arange(len(t_values))):
            raise NqecError(f"detector time coordinates must be 0..T-1, got {t_values.tolist()}")
        type_index = np.array([0 if ancillas[(c[0], c[1])] else 1 for c in coords], dtype=np.int64)
        layout = cls(
            shape=(len(STABILIZER_TYPES), len(t_values), len(y_coords), len(x_coords)),
            type_index=type_index,
            t_index=t_index.astype(np.int64),
            y_index=y_index.astype(np.int64),
            x_index=x_index.astype(np.int64),
            x_coords=tuple(float(v) for v in x_coords),
            y_coords=tuple(float(v) for v in y_coords),
        )
        if len(np.unique(layout.flat_index)) != n:
            raise NqecError("two detectors share a [type, t, y, x] cell; the circuit's coordinates are ambiguous")
        return layout

    def transposed(self) -> "Layout":
        """The same detectors with stabilizer types exchanged and y/x transposed: the frame in which an
        X-basis memory experiment looks like the Z-basis one (Stim's rotated memory circuits: the CNOT
        schedules, space and hook edges map onto each other; only the patch's corners and the
        measurement edges' rates, X ancillas have Hadamards, differ). An edge direction
        ``(type, dt, dy, dx)`` becomes ``(other type, dt, dx, dy)``.

        Example:
            >>> from decoder import CodeSpec
            >>> layout = Layout.from_circuit(CodeSpec(3, 3, 0.001, basis="x").circuit())
            >>> frame = layout.transposed()
            >>> int(frame.type_index[0]) == 1 - int(layout.type_index[0]), frame.transposed() == layout
            (True, True)
        """
        types, rounds, height, width = self.shape
        return Layout(shape=(types, rounds, width, height), type_index=1 - self.type_index, t_index=self.t_index,
                      y_index=self.x_index, x_index=self.y_index, x_coords=self.y_coords, y_coords=self.x_coords)

    def to_dense(self, events: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Events (bool or bit-packed) -> dense ``[shots, type, t, y, x]`` array of ``dtype``."""
        bits = as_bool_events(events, self.num_detectors)
        dense = np.zeros((bits.shape[0], int(np.prod(self.shape))), dtype=dtype)
        dense[:, self.flat_index] = bits
        return dense.reshape((bits.shape[0], *self.shape))

    def from_dense(self, dense: np.ndarray) -> np.ndarray:
        """Dense ``[shots, type, t, y, x]`` -> ``bool [shots, num_detectors]`` (nonzero = event)."""
        if dense.ndim != 5 or tuple(dense.shape[1:]) != self.shape:
            raise NqecError(f"expected dense events of shape [shots, {', '.join(map(str, self.shape))}], got {dense.shape}")
        return dense.reshape(dense.shape[0], -1)[:, self.flat_index] != 0

    def to_dict(self) -> dict:
        """JSON-ready form, saved in model bundles."""
        return {
            "shape": list(self.shape),
            "stabilizer_types": list(STABILIZER_TYPES),
            "type_index": self.type_index.tolist(),
            "t_index": self.t_index.tolist(),
            "y_index": self.y_index.tolist(),
            "x_index": self.x_index.tolist(),
            "x_coords": list(self.x_coords),
            "y_coords": list(self.y_coords),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Layout":
        return cls(
            shape=tuple(int(v) for v in data["shape"]),
            type_index=np.asarray(data["type_index"], dtype=np.int64),
            t_index=np.asarray(data["t_index"], dtype=np.int64),
            y_index=np.asarray(data["y_index"], dtype=np.int64),
            x_index=np.asarray(data["x_index"], dtype=np.int64),
            x_coords=tuple(float(v) for v in data["x_coords"]),
            y_coords=tuple(float(v) for v in data["y_coords"]),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.shape, self.flat_index.tobytes()))


def _ancilla_positions(circuit: stim.Circuit) -> dict[tuple[float, float], bool]:
    """(x, y) of every ancilla -> whether it measures an X stabilizer.

    Ancillas are the qubits measured before the final data readout (the last measurement
    instruction); those that are Hadamard-rotated measure X stabilizers.
    """
    measured: list[set[int]] = []
    rotated: set[int] = set()
    for inst in circuit.flattened():
        targets = {t.value for t in inst.targets_copy() if t.is_qubit_target}
        if inst.name == "H":
            rotated |= targets
        elif stim.gate_data(inst.name).produces_measurements:
            measured.append(targets)
    ancillas = set().union(*measured[:-1]) if len(measured) > 1 else set()
    qubit_coords = circuit.get_final_qubit_coordinates()
    return {(float(qubit_coords[q][0]), float(qubit_coords[q][1])): q in rotated for q in ancillas if q in qubit_coords}
