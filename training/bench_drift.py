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
from decoder.noise_estimate import DemGraph, EdgeAccumulator, EdgeEstimate, estimate_edges, reweighted_dem
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
        >>> hot.num_detectors == circuit.num_detectors, str(hot).count("DEPOLARIZE1(0.03)")  # first round, REPEAT body, last
        (True, 3)
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


def true_edge_p(dem: stim.DetectorErrorModel, truth: stim.DetectorErrorModel) -> np.ndarray:
    """``float [E]``: each edge of ``dem``'s graph as ``truth`` (another DEM of the circuit) has it (0 if absent)."""
    graph, true = DemGraph.from_dem(dem), DemGraph.from_dem(truth)
    lookup = dict(zip(map(tuple, true.detectors), true.edge_p(true.mechanism_p)))
    return np.array([lookup.get(tuple(edge), 0.0) for edge in graph.detectors])


def estimation_report(dem: stim.DetectorErrorModel, truth: stim.DetectorErrorModel, estimate: EdgeEstimate,
                      *, min_p: float = 1e-3, top: int = 10) -> dict:
    """How close the estimate is to the true edges: median relative error of edges with true
    p >= ``min_p``, the fraction within two standard errors, and whether the top departures are
    edges the drift really moved (true/nominal > 1.5 or < 1/1.5)."""
    true_p = true_edge_p(dem, truth)
    big = true_p >= min_p
    relative = np.abs(estimate.p / np.where(big, true_p, 1) - 1)[big]
    moved = np.abs(np.log(np.maximum(true_p, 1e-12) / estimate.nominal)) > np.log(1.5)
    rows = estimate.top_departures(top)
    for row in rows:
        row["true"] = float(true_p[row["edge"]])
    return {"shots": estimate.shots, "edges": len(true_p), "edges_p_ge_min": int(big.sum()), "min_p": min_p,
            "median_relative_error": float(np.median(relative)), "p90_relative_error": float(np.quantile(relative, 0.9)),
            "within_2_stderr": float(np.mean(np.abs(estimate.p - true_p)[big] <= 2 * estimate.stderr[big])),
            "edges_moved_by_drift": int(moved.sum()), "top_is_moved": bool(moved[rows[0]["edge"]]) if moved.any() else None,
            "top_moved_fraction": float(np.mean([moved[row["edge"]] for row in rows])), "top_departures": rows}


def _errors(decoder, events: np.ndarray, observables: np.ndarray) -> np.ndarray:
    return (decoder.decode_batch(events) != observables).any(axis=1)


def _rate(wrong: np.ndarray) -> dict:
    errors, shots = int(wrong.sum()), len(wrong)
    low, high = wilson_interval(errors, shots)
    return {"errors": errors, "shots": shots, "ler": errors / max(shots, 1), "ler_95": [low, high]}


def paired_ratio(wrong: np.ndarray, reference: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Errors of ``wrong`` ÷ errors of ``reference`` on the same shots, with a 95% paired bootstrap interval."""
    both, only_a, only_b = int((wrong & reference).sum()), int((wrong & ~reference).sum()), int((~wrong & reference).sum())
    counts = np.random.default_rng(seed).multinomial(len(wrong), np.array([both, only_a, only_b, len(wrong) - both - only_a - only_b]) / len(wrong), size=resamples)
    ratios = (counts[:, 0] + counts[:, 1]) / np.maximum(counts[:, 0] + counts[:, 2], 1)
    return {"ratio": (both + only_a) / max(both + only_b, 1), "ratio_95": [float(v) for v in np.quantile(ratios, [0.025, 0.975])]}


def compare_dems(spec, drift: Drift, *, train_shots: int = 100_000, test_shots: int = 100_000, seed: int = 0,
                 model: str | None = None) -> dict:
    """Matching (both modes) from the nominal, the estimated and the true DEM on the same drifted shots,
    and with ``model`` (a pre-decoder bundle) guided matching with each DEM as its prior (key
    ``guided MODEL``; its calibrated matching mode).

    The estimate is learned from ``train_shots`` detection events of the drifted circuit (seed
    ``seed``) and tested on ``test_shots`` fresh ones (seed ``seed + 1``).

    Example:
        >>> from decoder import CodeSpec
        >>> result = compare_dems(CodeSpec(3, 3, 0.003), Drift(), train_shots=5000, test_shots=2000)
        >>> sorted(result["decoders"]["correlated"])
        ['estimated', 'nominal', 'true']
    """
    dem = spec.dem()
    circuit = drift.apply(spec.circuit())
    truth = circuit.detector_error_model(decompose_errors=True)
    estimate = estimate_edges(dem, circuit.compile_detector_sampler(seed=seed).sample(train_shots, bit_packed=True))
    dems = {"nominal": dem, "estimated": reweighted_dem(dem, estimate), "true": truth}
    events, observables = circuit.compile_detector_sampler(seed=seed + 1).sample(test_shots, separate_observables=True)
    families = {mode: lambda d, mode=mode: MatchingDecoder(d, correlations=mode == "correlated")
                for mode in ("uncorrelated", "correlated")}
    if model is not None:
        from decoder.bundle import Bundle
        from decoder.experiment import with_dem

        bundle = Bundle.load(model)
        families[f"guided {model}"] = lambda d: bundle.decoder(with_dem(spec, d), pipeline="guided-matching")
    decoders = {}
    for family, build in families.items():
        wrong = {name: _errors(build(d), events, observables) for name, d in dems.items()}
        decoders[family] = {name: {**_rate(w), "vs_true": paired_ratio(w, wrong["true"], seed=seed)}
                            for name, w in wrong.items()}
    return {"spec": spec.to_dict(), "drift": dataclasses.asdict(drift), "train_shots": train_shots,
            "test_shots": test_shots, "seed": seed, "decoders": decoders,
            "estimation": estimation_report(dem, truth, estimate)}


@dataclasses.dataclass(frozen=True)
class DriftRun:
    """A device run in segments: shots per segment, and whether the drift is on in each.

    Defaults: nominal, then the drift appears, then it fades (nominal again)."""

    shots: tuple[int, ...] = (100_000, 200_000, 200_000)
    drifted: tuple[bool, ...] = (False, True, False)
    window: int = 10_000  # the adaptive decoder re-estimates every this many shots
    half_life: int = 20_000  # shots; older shots count half as much per half-life
    correlations: bool = True

    def __post_init__(self) -> None:
        if len(self.shots) != len(self.drifted) or any(s % self.window for s in self.shots):
            raise NqecError(f"expected one drift flag per segment and segments of whole windows of {self.window} "
                            f"shots, got shots {list(self.shots)} and flags {list(self.drifted)}")


def bench_drift(spec, drift: Drift, run: DriftRun = DriftRun(), *, seed: int = 0) -> dict:
    """A static decoder (nominal DEM), an adaptive one and one given the true DEM on the same shots.

    The adaptive decoder decodes each window of ``run.window`` shots with its current DEM, then
    adds the window's detection events to an :class:`EdgeAccumulator` (half-life
    ``run.half_life``) and rebuilds matching from the reweighted DEM. After each change of the
    noise, ``recovered_after_shots`` is the end of the first window whose adaptive errors are
    within 1.1x of the true-DEM decoder's on the same window (None if none).

    Example:
        >>> from decoder import CodeSpec
        >>> run = DriftRun(shots=(4000, 4000), drifted=(False, True), window=2000, half_life=2000)
        >>> result = bench_drift(CodeSpec(3, 3, 0.003), Drift(), run)
        >>> [s["drifted"] for s in result["segments"]], sorted(result["segments"][1]["decoders"])
        ([False, True], ['adaptive', 'static', 'true'])
    """
    nominal = spec.dem()
    circuits = {False: spec.circuit(), True: drift.apply(spec.circuit())}
    truths = {flag: MatchingDecoder(c.detector_error_model(decompose_errors=True), correlations=run.correlations)
              for flag, c in circuits.items()}
    static = adaptive = MatchingDecoder(nominal, correlations=run.correlations)
    accumulator = EdgeAccumulator(nominal, half_life=run.half_life)
    segments = []
    for index, (shots, flag) in enumerate(zip(run.shots, run.drifted)):
        sampler = circuits[flag].compile_detector_sampler(seed=seed + index)
        wrong = {"static": [], "adaptive": [], "true": []}
        for _ in range(shots // run.window):
            events, observables = sampler.sample(run.window, separate_observables=True)
            for name, decoder in (("static", static), ("adaptive", adaptive), ("true", truths[flag])):
                wrong[name].append(_errors(decoder, events, observables))
            accumulator.update(events)
            adaptive = MatchingDecoder(reweighted_dem(nominal, accumulator.estimate(stderr=False)),
                                       correlations=run.correlations)
        per_window = {name: [int(w.sum()) for w in windows] for name, windows in wrong.items()}
        recovered = next((run.window * (k + 1) for k, (a, t) in enumerate(zip(per_window["adaptive"], per_window["true"]))
                          if a <= 1.1 * t), None)
        segments.append({"shots": shots, "drifted": flag,
                         "decoders": {name: _rate(np.concatenate(w)) for name, w in wrong.items()},
                         "window_errors": per_window, "recovered_after_shots": recovered if index else None})
    return {"spec": spec.to_dict(), "drift": dataclasses.asdict(drift), "run": dataclasses.asdict(run), "seed": seed,
            "segments": segments}
