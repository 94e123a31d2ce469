"""SI1000 noise: the superconducting-inspired model of Gidney, Newman and McEwen (2021).

For strength p: two-qubit gates DEPOLARIZE2(p); single-qubit gates DEPOLARIZE1(p/10);
resets flip with 2p; measurements flip with 5p; qubits idle in a layer DEPOLARIZE1(p/10),
or DEPOLARIZE1(2p) when the layer measures or resets (resonator idle).
"""

from __future__ import annotations

import stim

_RESET_FLIP = {"R": "X_ERROR", "RZ": "X_ERROR", "RX": "Z_ERROR", "RY": "X_ERROR"}
_MEASURE_FLIP = {"M": "X_ERROR", "MZ": "X_ERROR", "MX": "Z_ERROR", "MY": "X_ERROR",
                 "MR": "X_ERROR", "MRZ": "X_ERROR", "MRX": "Z_ERROR", "MRY": "X_ERROR"}
_ANNOTATIONS = {"DETECTOR", "OBSERVABLE_INCLUDE", "QUBIT_COORDS", "SHIFT_COORDS"}


def add_si1000_noise(circuit: stim.Circuit, p: float) -> stim.Circuit:
    """Return a copy of a noiseless circuit with SI1000(p) noise inserted layer by layer.

    Example:
        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3)
        >>> noisy = add_si1000_noise(c, 0.001)
        >>> noisy.num_detectors == c.num_detectors
        True
    """
    if _has_noise(circuit):
        raise ValueError("add_si1000_noise expects a noiseless circuit")
    all_qubits = list(range(circuit.num_qubits))
    return _noisy_block(circuit, p, all_qubits)


def _has_noise(circuit: stim.Circuit) -> bool:
    for inst in circuit.flattened():
        if stim.gate_data(inst.name).is_noisy_gate and not stim.gate_data(inst.name).produces_measurements:
            return True
    return False


def _noisy_block(block: stim.Circuit, p: float, all_qubits: list[int]) -> stim.Circuit:
    out = stim.Circuit()
    touched: set[int] = set()
    resonator_layer = False
    has_gate = False

    def close_layer() -> None:
        nonlocal touched, resonator_layer, has_gate
        idle = [q for q in all_qubits if q not in touched]
        if has_gate and idle:
            out.append("DEPOLARIZE1", idle, 2 * p if resonator_layer else p / 10)
        touched, resonator_layer, has_gate = set(), False, False

    for inst in block:
        if isinstance(inst, stim.CircuitRepeatBlock):
            close_layer()
            out.append(stim.CircuitRepeatBlock(inst.repeat_count, _noisy_block(inst.body_copy(), p, all_qubits)))
            continue
        name = inst.name
        if name == "TICK":
            close_layer()
            out.append(inst)
            continue
        if name in _ANNOTATIONS:
            out.append(inst)
            continue
        qubits = [t.value for t in inst.targets_copy() if t.is_qubit_target]
        has_gate = True
        touched.update(qubits)
        if name in _MEASURE_FLIP:
            resonator_layer = True
            out.append(_MEASURE_FLIP[name], qubits, 5 * p)
            out.append(inst)
            if name.startswith("MR"):
                out.append(_MEASURE_FLIP[name], qubits, 2 * p)
        elif name in _RESET_FLIP:
            resonator_layer = True
            out.append(inst)
            out.append(_RESET_FLIP[name], qubits, 2 * p)
        elif stim.gate_data(name).is_two_qubit_gate:
            out.append(inst)
            out.append("DEPOLARIZE2", qubits, p)
        elif stim.gate_data(name).is_unitary:
            out.append(inst)
            out.append("DEPOLARIZE1", qubits, p / 10)
        else:
            raise ValueError(f"SI1000 noise does not know how to treat instruction {name}")
    close_layer()
    return out
