"""Noise that drifts: planted departures from a nominal circuit, and decoders that follow them.

``drifted_circuit`` adds noise where a device might go wrong (a hot spot of data qubits, one
qubit's readout, one coupler); ``compare_dems`` decodes the same shots with matching built from
the nominal, the estimated and the true DEM; ``bench_drift`` runs a device whose noise changes
mid-run past a static decoder and an adaptive one that re-estimates from the shots it decoded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

from decoder.errors import NqecError
from decoder.matching import MatchingDecoder
from decoder.noise_estimate import EdgeAccumulator, estimate_edges, reweighted_dem
from decoder.stats import wilson_interval

DRIFT_KINDS = ("hot-spot", "readout", "coupler")
MEASUREMENTS = {"M", "MR", "MX", "MY", "MZ", "MRX", "MRY", "MRZ"}


@dataclasses.dataclass(frozen=True)
class Drift:
    """A planted departure from the nominal noise.

    ``hot-spot``: ``DEPOLARIZE1(strength)`` on ``size`` neighbouring data qubits before every
    measurement layer (once per round); ``readout``: ``X_ERROR(strength)`` before every
    measurement of one ancilla; ``coupler``: ``DEPOLARIZE2(strength)`` after every two-qubit gate
    on one pair. Sites are picked nearest the centre of the lattice.

    Example:
        >>> from decoder import CodeSpec
        >>> circuit = CodeSpec(3, 3, 0.003).circuit()
        >>> hot = Drift("hot-spot", 0.03, size=2).apply(circuit)
        >>> str(hot).count("DEPOLARIZE1(0.03)")
        4
    """

    kind: str = "hot-spot"
    strength: float = 0.03
    size: int = 3

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise NqecError(f"drift kind must be one of {', '.join(DRIFT_KINDS)}, got {self.kind!r}")
        if not 0 < self.strength < 0.5:
            raise NqecError(f"drift strength must be in (0, 0.5), got {self.strength}")

    def apply(self, circuit: stim.Circuit) -> stim.Circuit:
        """A copy of ``circuit`` with this drift's noise added."""
        data, ancillas, coords = _roles(circuit)
        centre = np.mean([coords[q] for q in data], axis=0)
        if self.kind == "hot-spot":
            first = min(data, key=lambda q: np.linalg.norm(coords[q] - centre))
            line = [q for q in data if coords[q][1] == coords[first][1]]
            sites = sorted(line, key=lambda q: (np.linalg.norm(coords[q] - coords[first]), q))[: self.size]
            return _insert(circuit, lambda inst: inst.name in MEASUREMENTS,
                           stim.CircuitInstruction("DEPOLARIZE1", sites, [self.strength]), before=True)
        if self.kind == "readout":
            site = min(ancillas, key=lambda q: np.linalg.norm(coords[q] - centre))
            return _insert(circuit, lambda inst: inst.name in MEASUREMENTS and site in _qubits(inst),
                           stim.CircuitInstruction("X_ERROR", [site], [self.strength]), before=True)
        pair = _central_pair(circuit, coords, centre)
        return _insert(circuit, lambda inst: stim.gate_data(inst.name).is_two_qubit_gate and _has_pair(inst, pair),
                       stim.CircuitInstruction("DEPOLARIZE2", list(pair), [self.strength]), before=False)


def _qubits(inst: stim.CircuitInstruction) -> list[int]:
    return [t.value for t in inst.targets_copy() if t.is_qubit_target]


def _has_pair(inst: stim.CircuitInstruction, pair: tuple[int, int]) -> bool:
    qubits = _qubits(inst)
    return any(tuple(qubits[i: i + 2]) == pair for i in range(0, len(qubits), 2))


def _roles(circuit: stim.Circuit) -> tuple[list[int], list[int], dict[int, np.ndarray]]:
    """Data qubits (those of the last measurement), ancillas (the others), qubit coordinates."""
    coords = {q: np.array(c[:2], dtype=float) for q, c in circuit.get_final_qubit_coordinates().items()}
    last = [inst for inst in circuit.flattened() if inst.name in MEASUREMENTS][-1]
    data = sorted(set(_qubits(last)))
    ancillas = sorted(set(coords) - set(data))
    if not data or not ancillas:
        raise NqecError("a drift needs a memory circuit with qubit coordinates, data qubits measured last")
    return data, ancillas, coords


def _central_pair(circuit: stim.Circuit, coords: dict, centre: np.ndarray) -> tuple[int, int]:
    pairs = {tuple(_qubits(inst)[i: i + 2]) for inst in circuit.flattened()
             if stim.gate_data(inst.name).is_two_qubit_gate for i in range(0, len(_qubits(inst)), 2)}
    return min(pairs, key=lambda pair: (np.linalg.norm((coords[pair[0]] + coords[pair[1]]) / 2 - centre), pair))


def _insert(circuit: stim.Circuit, where, noise: stim.CircuitInstruction, *, before: bool) -> stim.Circuit:
    """``circuit`` with ``noise`` before (or after) every instruction that ``where`` picks."""
    out = stim.Circuit()
    for inst in circuit:
        if isinstance(inst, stim.CircuitRepeatBlock):
            out.append(stim.CircuitRepeatBlock(inst.repeat_count, _insert(inst.body_copy(), where, noise, before=before)))
        else:
            picked = where(inst)
            if picked and before:
                out.append(noise)
            out.append(inst)
            if picked and not before:
                out.append(noise)
    return out
