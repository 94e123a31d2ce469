"""Circuit-level noise inserted into a noiseless circuit, layer by layer, at per-qubit rates.

One layer walk (:func:`add_noise`) serves every model: SI1000 (uniform rates) and device noise files
(per-qubit and per-pair rates, :mod:`decoder.device_noise`). Per layer (the instructions between
TICKs) it inserts: DEPOLARIZE1 after single-qubit gates, DEPOLARIZE2 after two-qubit gates, a flip
(X_ERROR, or Z_ERROR for X-basis operations) after resets and before measurements, and DEPOLARIZE1
on the qubits a layer leaves idle (one rate for gate layers, another for layers that measure or reset:
the resonator idle). ``round_data`` depolarizes the data qubits (those measured only at the end) at
the start of every round, as Stim's ``before_round_data_depolarization`` does.

SI1000 (Gidney, Newman and McEwen 2021) at strength p: two-qubit gates p, single-qubit gates and
idling p/10, resets 2p, measurements 5p, resonator idle 2p.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import stim

_RESET_FLIP = {"R": "X_ERROR", "RZ": "X_ERROR", "RX": "Z_ERROR", "RY": "X_ERROR"}
_MEASURE_FLIP = {"M": "X_ERROR", "MZ": "X_ERROR", "MX": "Z_ERROR", "MY": "X_ERROR",
                 "MR": "X_ERROR", "MRZ": "X_ERROR", "MRX": "Z_ERROR", "MRY": "X_ERROR"}
_ANNOTATIONS = {"DETECTOR", "OBSERVABLE_INCLUDE", "QUBIT_COORDS", "SHIFT_COORDS"}


@dataclasses.dataclass(frozen=True)
class QubitRates:
    """One qubit's error probabilities (the two-qubit rate belongs to a pair, see :func:`add_noise`).

    Example:
        >>> QubitRates.si1000(0.001).readout
        0.005
    """

    gate1: float = 0.0  # DEPOLARIZE1 after a single-qubit gate
    idle: float = 0.0  # DEPOLARIZE1 per gate layer the qubit sits out
    idle_measure: float = 0.0  # DEPOLARIZE1 per measure/reset layer the qubit sits out
    round_data: float = 0.0  # DEPOLARIZE1 on a data qubit at the start of every round
    reset: float = 0.0  # flip after a reset
    readout: float = 0.0  # flip before a measurement

    @classmethod
    def si1000(cls, p: float) -> "QubitRates":
        return cls(gate1=p / 10, idle=p / 10, idle_measure=2 * p, reset=2 * p, readout=5 * p)


def add_si1000_noise(circuit: stim.Circuit, p: float) -> stim.Circuit:
    """Return a copy of a noiseless circuit with SI1000(p) noise inserted layer by layer.

    Example:
        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3)
        >>> noisy = add_si1000_noise(c, 0.001)
        >>> noisy.num_detectors == c.num_detectors
        True
    """
    rates = QubitRates.si1000(p)
    return add_noise(circuit, lambda q: rates, lambda a, b: p)


def add_noise(circuit: stim.Circuit, qubit_rates: Callable[[int], QubitRates],
              pair_rate: Callable[[int, int], float]) -> stim.Circuit:
    """A copy of a noiseless circuit with noise at ``qubit_rates(q)`` and ``pair_rate(a, b)`` (DEPOLARIZE2
    after a two-qubit gate on ``a, b``) inserted layer by layer. Targets that share a rate share an
    instruction; zero rates insert nothing.

    Example:
        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
        >>> noisy = add_noise(c, lambda q: QubitRates(readout=0.01 if q == 2 else 0.0), lambda a, b: 0.0)
        >>> [(i.name, i.targets_copy()[0].value) for i in noisy.flattened() if i.name == "X_ERROR"]
        [('X_ERROR', 2)]
    """
    if _has_noise(circuit):
        raise ValueError("adding noise expects a noiseless circuit")
    walk = _LayerWalk(list(range(circuit.num_qubits)), _data_qubits(circuit), qubit_rates, pair_rate)
    return walk.block(circuit)


def _has_noise(circuit: stim.Circuit) -> bool:
    for inst in circuit.flattened():
        if stim.gate_data(inst.name).is_noisy_gate and not stim.gate_data(inst.name).produces_measurements:
            return True
    return False


def _data_qubits(circuit: stim.Circuit) -> list[int]:
    """Qubits measured by the final measurement and never before it (a memory experiment's data)."""
    measured = [{t.value for t in inst.targets_copy() if t.is_qubit_target} for inst in circuit.flattened()
                if stim.gate_data(inst.name).produces_measurements]
    if not measured:
        return []
    earlier = set().union(*measured[:-1])
    return sorted(measured[-1] - earlier)


class _LayerWalk:
    """The state of one walk: the layer being read, and whether a round starts with the next gate."""

    def __init__(self, all_qubits, data_qubits, qubit_rates, pair_rate):
        self.all_qubits = all_qubits
        self.data_qubits = data_qubits
        self.rates = {q: qubit_rates(q) for q in all_qubits}
        self.pair_rate = pair_rate
        self.round_starts = False  # the previous layer reset qubits: the next gate layer opens a round
        self._new_layer()

    def _new_layer(self) -> None:
        self.touched: set[int] = set()
        self.resonator = False
        self.has_gate = False

    def block(self, block: stim.Circuit) -> stim.Circuit:
        out = stim.Circuit()
        for inst in block:
            if isinstance(inst, stim.CircuitRepeatBlock):
                self.close_layer(out)
                entry = self.round_starts
                body = self.block(inst.body_copy())
                if self.round_starts != entry and any(self.rates[q].round_data for q in self.data_qubits):
                    raise ValueError("round_data noise needs REPEAT blocks that start and end at a round boundary")
                out.append(stim.CircuitRepeatBlock(inst.repeat_count, body))
            elif inst.name == "TICK":
                self.close_layer(out)
                out.append(inst)
            elif inst.name in _ANNOTATIONS:
                out.append(inst)
            else:
                self.gate(inst, out)
        self.close_layer(out)
        return out

    def close_layer(self, out: stim.Circuit) -> None:
        if self.has_gate:
            idle = [q for q in self.all_qubits if q not in self.touched]
            field = "idle_measure" if self.resonator else "idle"
            _append_by_rate(out, "DEPOLARIZE1", [([q], getattr(self.rates[q], field)) for q in idle])
            self.round_starts = self.resonator
        self._new_layer()

    def gate(self, inst: stim.CircuitInstruction, out: stim.Circuit) -> None:
        name = inst.name
        qubits = [t.value for t in inst.targets_copy() if t.is_qubit_target]
        rate = self.rates
        if not self.has_gate and self.round_starts and name not in _MEASURE_FLIP:
            _append_by_rate(out, "DEPOLARIZE1", [([q], rate[q].round_data) for q in self.data_qubits])
        self.has_gate = True
        self.touched.update(qubits)
        if name in _MEASURE_FLIP:
            self.resonator = True
            _append_by_rate(out, _MEASURE_FLIP[name], [([q], rate[q].readout) for q in qubits])
            out.append(inst)
            if name.startswith("MR"):
                _append_by_rate(out, _MEASURE_FLIP[name], [([q], rate[q].reset) for q in qubits])
        elif name in _RESET_FLIP:
            self.resonator = True
            out.append(inst)
            _append_by_rate(out, _RESET_FLIP[name], [([q], rate[q].reset) for q in qubits])
        elif stim.gate_data(name).is_two_qubit_gate:
            out.append(inst)
            pairs = [qubits[i: i + 2] for i in range(0, len(qubits), 2)]
            _append_by_rate(out, "DEPOLARIZE2", [(pair, self.pair_rate(*pair)) for pair in pairs])
        elif stim.gate_data(name).is_unitary:
            out.append(inst)
            _append_by_rate(out, "DEPOLARIZE1", [([q], rate[q].gate1) for q in qubits])
        else:
            raise ValueError(f"the noise layer walk does not know how to treat instruction {name}")


def _append_by_rate(out: stim.Circuit, name: str, targets: list[tuple[list[int], float]]) -> None:
    """Append ``name`` once per distinct nonzero rate (in first-seen order) on the targets with that rate."""
    by_rate: dict[float, list[int]] = {}
    for qubits, rate in targets:
        if rate > 0:
            by_rate.setdefault(rate, []).extend(qubits)
    for rate, qubits in by_rate.items():
        out.append(name, qubits, rate)
