"""Learn a device's error model from the detection events it produces, and decode with it.

The pairwise-correlation estimator used to calibrate decoders in surface-code experiments
(Google Quantum AI, Nature 2021 and 2023): for two detectors ``i, j`` joined by a matching-graph
edge, the edge's probability follows from the detectors' rates and their covariance,

    p_ij = 1/2 - 1/2 sqrt(1 - 4 (<x_i x_j> - <x_i><x_j>) / (1 - 2<x_i> - 2<x_j> + 4<x_i x_j>)),

and a detector's boundary edge is what its pair edges leave unexplained of its rate,
``1 - 2<x_i> = (1 - 2 p_iB) prod_j (1 - 2 p_ij)``. Only the pairs that share a DEM edge are
counted, and one pair across the X and Z pieces of each decomposed mechanism (a Y error), which
sets that mechanism apart from the single-piece ones on the same edges (bit-packed AND + popcount
over chunks of shots, bounded memory). Standard errors come
from a delete-one-block jackknife: shots are dealt round-robin to ``blocks`` groups.

The reweighted DEM keeps the nominal DEM's structure (every error with the same detectors,
observables and ``^`` decomposition) and sets each error mechanism's probability so that the
mechanisms containing an edge XOR to that edge's estimate. The fit works in the additive
variable ``h = -log(1 - 2p) / 2`` (independent mechanisms XOR: their ``h`` add) and is
multiplicative (iterative proportional fitting): every mechanism is scaled by the geometric mean
of its edges' target/current ratios, so a mechanism keeps its nominal share of each edge, edges
made of single-edge mechanisms fit exactly, and X-Z correlated mechanisms (``D1 D2 ^ D3 D4``)
move with both of their edges. Probabilities are clipped to ``[MIN_PROBABILITY, MAX_PROBABILITY]``.

An :class:`EdgeAccumulator` keeps the running sums, optionally forgetting old shots with a
half-life, so a decoder can follow noise that drifts.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import scipy.sparse
import stim

from decoder.edges import error_components
from decoder.errors import NqecError
from decoder.events import as_bool_events

MIN_SHOTS = 1000  # fewer shots than this do not pin down edges of probability ~1e-3
MIN_PROBABILITY = 1e-9
MAX_PROBABILITY = 0.5 - 1e-9
CHUNK_BYTES = 1 << 25  # bit-packed pair products held at once


@dataclasses.dataclass(frozen=True, eq=False)
class DemGraph:
    """The matching graph of a decomposed DEM: its edges and which error mechanisms hold them.

    Example:
        >>> from decoder import CodeSpec
        >>> graph = DemGraph.from_dem(CodeSpec(3, 3, 0.003).dem())
        >>> graph.detectors.shape[1], graph.mechanism_edges.shape[0] == len(graph.mechanism_p)
        (2, True)
    """

    detectors: np.ndarray  # [E, 2] detector ids, partner -1 for a boundary edge
    mechanism_edges: scipy.sparse.csr_matrix  # [M, E] 0/1: the graphlike pieces of each mechanism
    mechanism_p: np.ndarray  # [M] the DEM's probabilities
    coordinates: np.ndarray  # [E, 2, C] detector coordinates of each end (NaN for the boundary)
    num_detectors: int
    cross_pairs: np.ndarray  # [C, 2] one detector pair across the pieces of each decomposed mechanism (X-Z)

    @classmethod
    def from_dem(cls, dem: stim.DetectorErrorModel) -> "DemGraph":
        edge_ids: dict[tuple[int, ...], int] = {}
        rows, cols, probabilities, crossing = [], [], [], set()
        for inst in dem.flattened():
            if inst.type != "error":
                continue
            pieces = []
            for component in error_components(inst.targets_copy()):
                dets = tuple(sorted(t.val for t in component if t.is_relative_detector_id()))
                if not 1 <= len(dets) <= 2:
                    raise NqecError(f"DEM error {inst} is not graphlike; build the DEM with decompose_errors=True")
                rows.append(len(probabilities))
                cols.append(edge_ids.setdefault(dets, len(edge_ids)))
                pieces.append(dets)
            if len(pieces) >= 2 and not set(pieces[0]) & set(pieces[1]):
                crossing.add((min(pieces[0][0], pieces[1][0]), max(pieces[0][0], pieces[1][0])))
            probabilities.append(inst.args_copy()[0])
        detectors = np.full((len(edge_ids), 2), -1, dtype=np.int64)
        for dets, index in edge_ids.items():
            detectors[index, : len(dets)] = dets
        matrix = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(probabilities), len(edge_ids)))
        matrix.data[:] = 1.0  # an edge twice in one mechanism (rare) still counts once
        known = dem.get_detector_coordinates()
        width = max((len(c) for c in known.values()), default=0)
        table = np.full((dem.num_detectors + 1, max(width, 1)), np.nan)
        for det, coords in known.items():
            table[det, : len(coords)] = coords
        cross = np.array(sorted(crossing - set(edge_ids)), dtype=np.int64).reshape(-1, 2)
        return cls(detectors, matrix, np.array(probabilities, dtype=np.float64), table[detectors], dem.num_detectors,
                   cross)

    @property
    def num_edges(self) -> int:
        return len(self.detectors)


    @functools.cached_property
    def detector_members(self) -> scipy.sparse.csr_matrix:
        """``[M, N]`` 0/1: the detectors each mechanism flips (its pieces XORed)."""
        rows = np.repeat(np.arange(self.num_edges), 2)
        cols = self.detectors.reshape(-1)
        keep = cols >= 0
        incidence = scipy.sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                                            shape=(self.num_edges, self.num_detectors))
        flips = (self.mechanism_edges @ incidence).tocsr()
        flips.data = np.mod(flips.data, 2)
        flips.eliminate_zeros()
        return flips

    @functools.cached_property
    def pairs(self) -> np.ndarray:
        """``[P, 2]``: the detector pairs whose correlations the estimator measures: every pair edge
        (in edge order), then the :attr:`cross_pairs`, which tell a decomposed mechanism (a Y error's
        X and Z halves) from the single-piece mechanisms that share its edges."""
        return np.concatenate([self.detectors[self.detectors[:, 1] >= 0], self.cross_pairs])

    @functools.cached_property
    def pair_members(self) -> scipy.sparse.csr_matrix:
        """``[M, P]`` 0/1: mechanisms that flip both detectors of each of :attr:`pairs`."""
        flips = self.detector_members.tocsc()
        return flips[:, self.pairs[:, 0]].multiply(flips[:, self.pairs[:, 1]]).tocsr()

    def observed(self, mechanism_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the pair estimator measures under ``mechanism_p``: ``(detector rates [N], pair flips [P])``."""
        h = _h(mechanism_p)
        return _p(self.detector_members.T @ h), _p(self.pair_members.T @ h)

    def edge_p(self, mechanism_p: np.ndarray) -> np.ndarray:
        """``float [E]``: each edge's probability, the XOR of the mechanisms that contain it."""
        return _p(self.mechanism_edges.T @ _h(mechanism_p))


def _h(p: np.ndarray) -> np.ndarray:
    """Additive weight of independent flips: ``h(p XOR q) = h(p) + h(q)``."""
    return -0.5 * np.log1p(-2 * np.asarray(p, dtype=np.float64))


def _p(h: np.ndarray) -> np.ndarray:
    return -0.5 * np.expm1(-2 * np.asarray(h, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class EdgeEstimate:
    """Estimated probability of every matching-graph edge, with its jackknife standard error.

    Example:
        >>> from decoder import CodeSpec
        >>> spec = CodeSpec(3, 3, 0.01)
        >>> events = spec.circuit().compile_detector_sampler(seed=1).sample(20000)
        >>> estimate = estimate_edges(spec.dem(), events)
        >>> bool(np.median(np.abs(estimate.p / estimate.nominal - 1)) < 0.2)
        True
    """

    detectors: np.ndarray  # [E, 2], partner -1 for a boundary edge
    p: np.ndarray  # [E] estimated probability
    stderr: np.ndarray  # [E] jackknife standard error of p
    nominal: np.ndarray  # [E] probability in the DEM the estimate started from
    shots: float  # (effective, under forgetting) shots behind the estimate
    mechanism_p: np.ndarray  # [M] fitted probability of each DEM error mechanism, in DEM order

    def interval(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of each edge's probability, ``p -+ z stderr`` clipped to [0, 0.5]."""
        return np.clip(self.p - z * self.stderr, 0, 0.5), np.clip(self.p + z * self.stderr, 0, 0.5)

    def departure(self, z: float = 1.96) -> np.ndarray:
        """``float [E]``: ``log(estimate / nominal)`` at the end of the interval nearest the nominal
        (0 where the interval holds the nominal), so noisy small edges do not top the list."""
        low, high = self.interval(z)
        up = np.log(np.maximum(low, MIN_PROBABILITY) / self.nominal)
        down = np.log(np.maximum(high, MIN_PROBABILITY) / self.nominal)
        return np.where(up > 0, up, np.where(down < 0, down, 0.0))

    def top_departures(self, count: int = 20, z: float = 1.96) -> list[dict]:
        """The ``count`` edges that depart most from the nominal, as JSON-ready rows."""
        departure = self.departure(z)
        low, high = self.interval(z)
        order = np.argsort(-np.abs(departure), kind="stable")[:count]
        return [{"edge": int(e), "detectors": [int(d) for d in self.detectors[e] if d >= 0],
                 "nominal": float(self.nominal[e]), "estimate": float(self.p[e]), "stderr": float(self.stderr[e]),
                 "ratio": float(self.p[e] / self.nominal[e]),
                 "ratio_interval": [float(low[e] / self.nominal[e]), float(high[e] / self.nominal[e])]}
                for e in order]


class EdgeAccumulator:
    """Running detector and pair sums of detection events; ``estimate()`` at any time.

    With ``half_life`` (shots), older shots are forgotten exponentially: sums are scaled by
    ``0.5 ** (batch / half_life)`` before each batch is added. With ``shrink`` (default), each
    measured rate and pair correlation is pulled toward the DEM's value by
    ``sigma^2 / (departure^2 + sigma^2)`` before the fit: departures well beyond their noise stay,
    noise on edges the device did not move mostly goes (it would otherwise cost logical errors).

    Example:
        >>> from decoder import CodeSpec
        >>> spec = CodeSpec(3, 3, 0.01)
        >>> sampler = spec.circuit().compile_detector_sampler(seed=2)
        >>> accumulator = EdgeAccumulator(spec.dem(), half_life=50000)
        >>> for _ in range(4):
        ...     accumulator.update(sampler.sample(5000, bit_packed=True))
        >>> round(accumulator.shots)
        18079
        >>> accumulator.estimate().p.shape == accumulator.graph.detectors[:, 0].shape
        True
    """

    def __init__(self, dem: stim.DetectorErrorModel, *, blocks: int = 10, half_life: float | None = None,
                 shrink: bool = True):
        if blocks < 2:
            raise NqecError(f"the jackknife needs at least 2 blocks, got {blocks}")
        if half_life is not None and not half_life > 0:
            raise NqecError(f"half_life must be a positive number of shots, got {half_life}")
        self.dem = dem
        self.graph = DemGraph.from_dem(dem)
        self.half_life = half_life
        self.shrink = shrink
        self.num_detectors = dem.num_detectors
        self._a, self._b = self.graph.pairs.T
        self._count = np.zeros(blocks)
        self._singles = np.zeros((blocks, self.num_detectors))
        self._pairs = np.zeros((blocks, len(self._a)))
        self._seen = 0

    @property
    def shots(self) -> float:
        return float(self._count.sum())

    def update(self, events: np.ndarray) -> None:
        """Add ``bool [shots, N]`` or bit-packed ``uint8 [shots, ceil(N/8)]`` detection events."""
        events = as_bool_events(np.asarray(events), self.num_detectors)
        if self.half_life is not None:
            decay = 0.5 ** (len(events) / self.half_life)
            for sums in (self._count, self._singles, self._pairs):
                sums *= decay
        blocks = len(self._count)
        step = max(8 * blocks, (CHUNK_BYTES * 8 // max(len(self._a), 1)) // (8 * blocks) * (8 * blocks))
        for start in range(0, len(events), step):
            chunk = events[start: start + step]
            for offset in range(blocks):
                block = (self._seen + start + offset) % blocks
                part = chunk[offset::blocks]
                self._count[block] += len(part)
                self._singles[block] += part.sum(axis=0)
                self._pairs[block] += self._pair_counts(part)
        self._seen += len(events)

    def _pair_counts(self, part: np.ndarray) -> np.ndarray:
        """How many shots of ``part`` fire both detectors of each pair edge."""
        packed = np.ascontiguousarray(np.packbits(part, axis=0).T)  # [N, shots/8]
        return np.bitwise_count(packed[self._a] & packed[self._b]).sum(axis=1, dtype=np.int64)

    def estimate(self, *, stderr: bool = True) -> EdgeEstimate:
        """Every edge's probability from the sums so far, with jackknife standard errors (NaN
        without ``stderr``: one fit instead of ``blocks + 1``)."""
        if self.shots < MIN_SHOTS:
            raise NqecError(f"need at least {MIN_SHOTS} shots to estimate edge probabilities, got {self.shots:.0f}")
        sums = [np.concatenate([total.sum(axis=0, keepdims=True), total.sum(axis=0) - total])
                for total in (self._count, self._singles, self._pairs)]
        targets = self._observed(*sums)  # each [1 + blocks, ...]: all shots, then each block left out
        if self.shrink:
            targets = [_shrunk(stat, nominal, self.shots)
                       for stat, nominal in zip(targets, self.graph.observed(self.graph.mechanism_p))]
        sets = len(self._count) + 1 if stderr else 1
        fits = [fit_mechanisms(self.graph, targets[0][k], targets[1][k]) for k in range(sets)]
        edges = np.array([self.graph.edge_p(q) for q in fits])
        blocks = len(self._count)
        spread = np.sqrt((blocks - 1) / blocks * ((edges[1:] - edges[1:].mean(axis=0)) ** 2).sum(axis=0)) if stderr \
            else np.full(self.graph.num_edges, np.nan)
        return EdgeEstimate(self.graph.detectors, edges[0], spread, self.graph.edge_p(self.graph.mechanism_p),
                            self.shots, fits[0])

    def _observed(self, count: np.ndarray, singles: np.ndarray, pairs: np.ndarray) -> list[np.ndarray]:
        """Detector rates ``[K, N]`` and pair-edge flip probabilities ``[K, P]`` of ``K`` sets of sums."""
        x = np.clip(singles / count[:, None], 0, MAX_PROBABILITY)
        xa, xb, xab = x[:, self._a], x[:, self._b], pairs / count[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (xab - xa * xb) / (1 - 2 * xa - 2 * xb + 4 * xab)
        return [x, 0.5 - 0.5 * np.sqrt(np.clip(1 - 4 * np.nan_to_num(ratio), 0, 1))]


def _shrunk(stat: np.ndarray, nominal: np.ndarray, shots: float) -> np.ndarray:
    """Each measured statistic pulled toward its nominal value by ``sigma^2 / (departure^2 + sigma^2)``
    (``sigma``: its jackknife error over rows 1.., at least the binomial error of the nominal rate on
    ``shots``: a rare edge seen in no block has no jackknife spread, yet a few thousand shots do not show
    it is gone), the same weight for every row. The floor: hot spot at d=5, DEM from 3,000 shots,
    errors / true DEM's 1.14 -> 1.09x (plain) and 1.27 -> 1.20x (correlated); unchanged from 10^5."""
    blocks = len(stat) - 1
    variance = (blocks - 1) / blocks * ((stat[1:] - stat[1:].mean(axis=0)) ** 2).sum(axis=0)
    variance = np.maximum(variance, nominal * (1 - nominal) / shots)
    departure = stat[0] - nominal
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.nan_to_num(departure ** 2 / (departure ** 2 + variance), nan=1.0)
    return nominal + keep * (stat - nominal)


def estimate_edges(dem: stim.DetectorErrorModel, events: np.ndarray, *, blocks: int = 10,
                   shrink: bool = True) -> EdgeEstimate:
    """Estimate every edge of ``dem``'s matching graph from detection events alone (no labels).

    ``events``: ``bool [shots, N]`` or bit-packed ``uint8 [shots, ceil(N/8)]``; see
    :class:`EdgeEstimate` for an example."""
    accumulator = EdgeAccumulator(dem, blocks=blocks, shrink=shrink)
    accumulator.update(events)
    return accumulator.estimate()


def fit_mechanisms(graph: DemGraph, detector_p: np.ndarray, pair_p: np.ndarray, *, iterations: int = 500,
                   tolerance: float = 1e-6) -> np.ndarray:
    """``float [M]``: mechanism probabilities that reproduce each detector's rate ``detector_p [N]``
    and, for each of ``graph.pairs``, the probability ``pair_p`` that a mechanism flips both of its
    detectors. Multiplicative fit in ``h``, alternating between the
    pair and the detector constraints, started from the DEM's own probabilities; a mechanism in
    several constraints of a group moves by the geometric mean of their ratios.

    Example:
        >>> from decoder import CodeSpec
        >>> graph = DemGraph.from_dem(CodeSpec(3, 3, 0.003).dem())
        >>> detector_p, pair_p = graph.observed(graph.mechanism_p * 1.5)
        >>> fitted = fit_mechanisms(graph, detector_p, pair_p)
        >>> bool(np.allclose(graph.edge_p(fitted), graph.edge_p(graph.mechanism_p * 1.5), rtol=1e-3))
        True
    """
    h = _h(np.clip(graph.mechanism_p, MIN_PROBABILITY, MAX_PROBABILITY))
    groups = [(graph.pair_members, _h(np.clip(pair_p, MIN_PROBABILITY, MAX_PROBABILITY))),
              (graph.detector_members, _h(np.clip(detector_p, MIN_PROBABILITY, MAX_PROBABILITY)))]
    counts = [np.maximum(np.asarray(members.sum(axis=1)).ravel(), 1) for members, _ in groups]
    for _ in range(iterations):
        worst = 0.0
        for (members, target), count in zip(groups, counts):
            log_ratio = np.log(target / np.maximum(members.T @ h, 1e-300))
            worst = max(worst, float(np.abs(log_ratio).max(initial=0.0)))
            h = h * np.exp((members @ log_ratio) / count)
        if worst < tolerance:
            break
    return np.clip(_p(h), MIN_PROBABILITY, MAX_PROBABILITY)


def reweighted_dem(dem: stim.DetectorErrorModel, estimate: EdgeEstimate) -> stim.DetectorErrorModel:
    """``dem`` (flattened) with each error's probability replaced by the estimate's fitted one.

    Same errors in the same order with the same targets; only the numbers change.

    Example:
        >>> from decoder import CodeSpec
        >>> spec = CodeSpec(3, 3, 0.01)
        >>> events = spec.circuit().compile_detector_sampler(seed=3).sample(20000)
        >>> new = reweighted_dem(spec.dem(), estimate_edges(spec.dem(), events))
        >>> new.num_errors == spec.dem().num_errors, new.num_detectors == spec.dem().num_detectors
        (True, True)
    """
    graph = DemGraph.from_dem(dem)
    if len(estimate.mechanism_p) != len(graph.mechanism_p) or not np.array_equal(estimate.detectors, graph.detectors):
        raise NqecError(f"the estimate's {len(estimate.mechanism_p)} mechanisms and {len(estimate.detectors)} edges "
                        f"are not this DEM's {len(graph.mechanism_p)} and {graph.num_edges}")
    probabilities = iter(estimate.mechanism_p)
    text = _ERROR.sub(lambda _: f"error({next(probabilities):.17g})", str(dem.flattened()))
    return stim.DetectorErrorModel(text)


_ERROR = re.compile(r"^error\([^)]*\)", flags=re.MULTILINE)


def plot_estimate(estimate: EdgeEstimate, graph: DemGraph, path: str, *, title: str = "", z: float = 1.96) -> None:
    """PNG: estimate/nominal of every edge over the lattice, one panel per round plus their maximum.

    Pair edges are segments between their detectors (x, y); time-like edges circles and boundary
    edges squares at their detector. Colour: the :meth:`EdgeEstimate.departure` (interval end
    nearest 1), so only edges the data clearly moved are coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    coords = graph.coordinates
    if coords.shape[2] < 3 or np.isnan(coords[:, 0, :3]).any():
        raise NqecError("plotting needs (x, y, t) coordinates on every detector of the DEM")
    departure = np.clip(estimate.departure(z) / np.log(2), -3, 3)
    t_low = np.nanmin(coords[:, :, 2], axis=1)
    layers = np.unique(t_low)
    panels = [("max over rounds", None)] + [(f"round t={t:g}", t) for t in layers]
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows + 0.6), squeeze=False)
    norm = matplotlib.colors.Normalize(-3, 3)
    cmap = plt.get_cmap("RdBu_r")
    a, b = coords[:, 0, :2], coords[:, 1, :2]
    spacelike = ~np.isnan(b[:, 0]) & ~np.all(np.isclose(a, b), axis=1)
    timelike = ~np.isnan(b[:, 0]) & ~spacelike
    boundary = np.isnan(b[:, 0])
    for ax, (name, layer) in zip(axes.ravel(), panels):
        if layer is None:  # per-edge geometry over all rounds: keep the largest |departure|
            keys = np.round(np.concatenate([a, np.nan_to_num(b), boundary[:, None], timelike[:, None]], axis=1), 3)
            _, group = np.unique(keys, axis=0, return_inverse=True)
            strongest = np.zeros(group.max() + 1)
            for e in np.argsort(np.abs(departure)):
                strongest[group[e]] = departure[e]
            values, chosen = strongest[group], np.ones(len(group), bool)
        else:
            values, chosen = departure, t_low == layer
        for mask, marker in ((spacelike & chosen, None), (timelike & chosen, "o"), (boundary & chosen, "s")):
            mask = np.flatnonzero(mask)
            mask = mask[np.argsort(np.abs(values[mask]), kind="stable")]  # strongest drawn on top of overlaps
            if marker is None:
                segments = np.stack([a[mask], b[mask]], axis=1)
                ax.add_collection(LineCollection(segments, colors=cmap(norm(values[mask])), linewidths=3))
            else:
                ax.scatter(a[mask, 0], a[mask, 1], c=values[mask], cmap=cmap, norm=norm, marker=marker, s=40,
                           edgecolors="0.6", linewidths=0.5, zorder=3)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.autoscale()
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.8,
                    label="log2(estimate / nominal), interval end nearest 1")
    figure.suptitle(title or f"estimated edge probabilities / nominal ({estimate.shots:,.0f} shots; "
                             "segments: pair edges, o: time-like, s: boundary)", fontsize=10)
    figure.savefig(path, dpi=110)
    plt.close(figure)
