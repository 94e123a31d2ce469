"""Neural-guided matching: a pre-decoder's edge posteriors become per-shot matching weights.

The network never commits an edge. For every shot, the edges around its detection events get
the weight ``-(1 - mix) * prior_logit - mix * network_logit / temperature`` (log-odds: the DEM
prior mixed with the network's posterior, clipped at 0), and minimum-weight perfect matching
decodes the shot on the reweighted graph: PyMatching's sparse blossom, compiled into
``decoder._weighted_matching``, sets those edges' weights in place and restores them after the
shot, so the matching graph is built once, never per shot.

With ``correlated`` matching a second pass follows, as in PyMatching's correlated mode: every
edge that shares a DEM error mechanism with an edge of the first matching (the X and Z halves
of a Y error, say) gets the weight of its conditional probability given that edge, if lower,
and the shot is matched again.
"""

from __future__ import annotations

import copy
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pymatching
import scipy.sparse
import stim

from decoder.edges import Direction, EdgeTable
from decoder.errors import NqecError
from decoder.events import as_bool_events
from decoder.interface import DecodeResult, Stage
from decoder.predecoder import NetworkPipeline, Runner
from decoder.spec import CodeSpec

MAX_WEIGHT = 30.0  # log-odds ceiling (an edge the network rules out still stays usable)
OVERLAP_SHOTS = 1024  # the network runs on the next this many shots while matching decodes the current ones


def conditional_weights(dem, edges: EdgeTable) -> scipy.sparse.csr_matrix:
    """``[E, E]``: entry (e, f) is ``-logit P(f | e)`` for edges that share a DEM error mechanism
    (to first order in the mechanisms' probabilities); absent where they share none."""
    probabilities = np.array([inst.args_copy()[0] for inst in dem.flattened() if inst.type == "error"])
    membership = edges.mechanism_edges.astype(np.float64)  # [mechanisms, E]
    edge_probability = membership.T @ probabilities
    joint = (membership.T @ scipy.sparse.diags(probabilities) @ membership).tocoo()
    keep = joint.row != joint.col
    rows, cols = joint.row[keep], joint.col[keep]
    conditional = np.clip(joint.data[keep] / edge_probability[rows], 1e-12, 0.5)
    return scipy.sparse.csr_matrix((-np.log(conditional / (1 - conditional)), (rows, cols)),
                                   shape=(edges.num_edges, edges.num_edges))


def prior_logits(dem, edges: EdgeTable) -> np.ndarray:
    """``float [E]``: log-odds ``log(p / (1 - p))`` of each edge as PyMatching merges it from the DEM."""
    graph = pymatching.Matching.from_detector_error_model(dem)
    probabilities = np.array([graph.get_boundary_edge_data(int(a))["error_probability"] if b < 0 else
                              graph.get_edge_data(int(a), int(b))["error_probability"] for a, b in edges.detectors])
    probabilities = np.clip(probabilities, 1e-12, 0.5)
    return np.log(probabilities / (1 - probabilities))


def _check_finite(weights: np.ndarray, what: str) -> None:
    """NaN and infinities are errors (clipping would pass NaN to the matcher as an arbitrary weight)."""
    if np.isfinite(weights).all():
        return
    bad = np.argwhere(~np.isfinite(weights))
    if len(bad):
        where = ", ".join(f"{name} {int(i)}" for name, i in zip(what.split(), bad[0]))
        raise NqecError(f"expected finite log-odds weights; {where} is {weights[tuple(bad[0])]}")


class WeightedMatcher:
    """Minimum-weight perfect matching with per-shot edge weights on a graph built once.

    PyMatching's sparse blossom, compiled into ``decoder._weighted_matching``: for each shot the
    edges touching its detection events take that shot's weights, the shot is matched, and the
    weights are put back. With ``correlations`` (:func:`conditional_weights`) a second pass
    follows: the edges that share an error mechanism with the first matching's edges get their
    conditional weight, if lower, and the shot is matched again.

    One matcher decodes one batch at a time (threads sharing it take turns). A shot without a
    perfect matching (an odd number of detection events in a component without a boundary) fails
    its batch with an NqecError naming the shot.

    Example:
        >>> from decoder import CodeSpec, Layout
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> edges = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
        >>> prior = prior_logits(spec.dem(), edges)
        >>> matcher = WeightedMatcher(edges, -prior)
        >>> events = np.zeros((2, spec.dem().num_detectors), dtype=bool)
        >>> matcher.decode(events, np.tile(-prior, (2, 1))).tolist()
        [[False], [False]]
    """

    def __init__(self, edges: EdgeTable, weights: np.ndarray, correlations: scipy.sparse.csr_matrix | None = None):
        from decoder._weighted_matching import WeightedMatching

        self.edges = edges
        self.correlated = correlations is not None
        self.num_observables = edges.observables.shape[1]
        if self.num_observables > 64:
            raise NqecError(f"the weighted matcher handles up to 64 observables, got {self.num_observables}")
        masks = (edges.observables.astype(np.uint64) << np.arange(self.num_observables, dtype=np.uint64)).sum(axis=1)
        indptr, indices, conditional = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        if correlations is not None:
            correlations = correlations.tocsr()
            indptr, indices, conditional = correlations.indptr, correlations.indices, correlations.data
        _check_finite(np.asarray(weights), "edge")
        self._matching = WeightedMatching(edges.num_detectors, edges.detectors, masks.astype(np.uint64),
                                          np.clip(weights, 0.0, MAX_WEIGHT), indptr, indices, conditional)

    def decode(self, events: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``bool [S, N]`` events and float ``[S, E]`` per-shot log-odds weights -> ``bool [S, O]`` observable flips.

        Only the edges touching a shot's detection events take its weights (and, with
        correlations, the edges correlated with its first matching); the others keep the
        weights the graph was built with. Weights are clipped to [0, MAX_WEIGHT]; NaN and
        infinities are errors."""
        masks = self._run(self._matching.decode_batch, events, weights)
        return ((masks[:, None] >> np.arange(self.num_observables, dtype=np.uint64)) & 1).astype(bool)

    def decode_edges(self, events: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """As :meth:`decode`, but the matching itself: ``bool [S, E]``, True on the edges it uses
        (their observable masks XOR to :meth:`decode`'s answer; their detectors, to the events)."""
        return self._run(self._matching.decode_edges_batch, events, weights).astype(bool)

    def decode_mixed(self, events: np.ndarray, logits: np.ndarray, logit_of: np.ndarray, offset: np.ndarray,
                     scale: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """Per-shot weights from one logit per edge, and the answer as parities, in one compiled call:
        in shot ``s`` edge ``e`` weighs ``offset[e] + scale[e] * logits[s, logit_of[e]]`` (``offset[e]``
        where ``logit_of[e] < 0``), clipped as in :meth:`decode`; returns ``uint8 [S, B]``, per shot the
        XOR of the ``answers`` rows (``uint8 [E, B]``) of the edges of its matching. What
        :meth:`decode_edges` on the dense weights and a parity product with ``answers`` give (up to
        the rounding of the weights, computed here in double precision), with only the weights of
        the edges a shot touches ever computed (and checked: a non-finite one is an error)."""
        try:
            return self._matching.decode_mixed_batch(np.ascontiguousarray(events, dtype=np.uint8),
                                                     np.ascontiguousarray(logits, dtype=np.float32), logit_of,
                                                     offset, scale, MAX_WEIGHT, answers)
        except ValueError as error:  # shapes, a non-finite logit, a shot without a perfect matching
            raise NqecError(str(error)) from None

    def _run(self, method, events: np.ndarray, weights: np.ndarray) -> np.ndarray:
        shape = (len(events), self.edges.num_edges)
        if events.ndim != 2 or events.shape[1] != self.edges.num_detectors or weights.shape != shape:
            raise NqecError(f"expected events [shots, {self.edges.num_detectors}] and weights {list(shape)}, "
                            f"got {list(events.shape)} and {list(weights.shape)}")
        _check_finite(weights, "shot edge")
        clipped = np.clip(weights, 0.0, MAX_WEIGHT).astype(np.float32)
        try:
            return method(np.ascontiguousarray(events, dtype=np.uint8), clipped)
        except ValueError as error:  # the compiled matcher's checks (a shot without a perfect matching)
            raise NqecError(str(error)) from None


class GuidedMatchingPipeline(NetworkPipeline):
    """``guided-matching``: the pre-decoder's edge logits, mixed with the DEM prior, weight matching.

    ``mix`` (0: the prior alone, plain matching; 1: the network alone), ``temperature``
    (divides the network's logits) and ``correlations`` (a second, correlated pass) are
    calibrated on held-out shots and kept in the manifest.

    Per shot, the stage is NETWORK (MATCHING at mix 0, where the network has no say) and the
    confidence is the lowest ``|p - 0.5|`` of the mixed edge probabilities around the shot's
    detection events: how clearly the weights told matching which of those edges fired
    (0.5 for a shot without events, and at mix 0)."""

    name = "guided-matching"

    def __init__(self, spec: CodeSpec, runner: Runner, directions: tuple[Direction, ...], window: int,
                 mix: float = 0.5, temperature: float = 1.0, correlations: bool = False, network_basis: str = "z"):
        if not 0 <= mix <= 1 or temperature <= 0:
            raise NqecError(f"guided matching needs 0 <= mix <= 1 and temperature > 0, got {mix}, {temperature}")
        super().__init__(spec, runner, directions, window, network_basis)
        self.mix = mix
        self.temperature = temperature
        self.correlations = correlations
        self._weigh(spec.dem())
        self._start_network_thread()

    def _weigh(self, dem: stim.DetectorErrorModel) -> None:
        """Take the prior (and the correlated pass's conditional weights) from ``dem``."""
        self.dem = dem
        self.prior = prior_logits(dem, self.geometry.edges)
        self.matcher = WeightedMatcher(self.geometry.edges, -self.prior,
                                       conditional_weights(dem, self.geometry.edges) if self.correlations else None)

    def _start_network_thread(self) -> None:
        """One thread, for this pipeline's life, runs the network on the next shots while matching runs."""
        self._network_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nqec-guided-network")
        weakref.finalize(self, self._network_thread.shutdown, wait=False)

    def with_dem(self, dem: stim.DetectorErrorModel) -> "GuidedMatchingPipeline":
        """This pipeline with its prior taken from ``dem`` (e.g. one re-estimated from detection
        events: :func:`decoder.noise_estimate.reweighted_dem`), which must have the structure of the
        pipeline's DEM (the same error mechanisms on the same detectors; probabilities may differ).
        The network, its geometry and the calibrated mix are shared; this pipeline is unchanged."""
        if (dem.num_detectors, dem.num_observables, dem.num_errors) != \
                (self.dem.num_detectors, self.dem.num_observables, self.dem.num_errors):
            raise NqecError(f"expected a DEM with the structure of the pipeline's ({self.dem.num_detectors} detectors, "
                            f"{self.dem.num_observables} observables, {self.dem.num_errors} error mechanisms), got "
                            f"{dem.num_detectors}, {dem.num_observables} and {dem.num_errors}")
        twin = copy.copy(self)
        twin._weigh(dem)
        twin._start_network_thread()
        return twin

    def mixed_logits(self, network: np.ndarray, mix: float | None = None,
                     temperature: float | None = None) -> np.ndarray:
        """``float32 [S, E]``: the prior's log-odds mixed with the network's (default: the pipeline's mix)."""
        mix = self.mix if mix is None else mix
        temperature = self.temperature if temperature is None else temperature
        predictable = self.geometry.predictable
        mixed = np.tile(self.prior.astype(np.float32), (len(network), 1))
        mixed[:, predictable] = (1 - mix) * mixed[:, predictable] + (mix / temperature) * network
        return mixed

    def _match(self, bits: np.ndarray, network: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matching on the mixed weights: ``(bool [S, O] observables, float32 [S] confidence)``."""
        mixed = self.mixed_logits(network)
        observables = self.matcher.decode(bits, -mixed)
        confidence = np.full(len(bits), 0.5, np.float32)
        if self.mix > 0:
            lit = np.zeros((len(bits), bits.shape[1] + 1), bool)  # the extra column: a boundary edge's -1 end
            lit[:, :-1] = bits
            detectors = self.geometry.edges.detectors
            near = lit[:, detectors[:, 0]] | lit[:, detectors[:, 1]]  # edges touching a detection event
            certainty = 0.5 * np.tanh(np.abs(mixed) / 2)  # |sigmoid(x) - 0.5|
            confidence = np.where(near, certainty, 0.5).min(axis=1).astype(np.float32)
        return observables, confidence

    def _decode_overlapped(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on the next OVERLAP_SHOTS shots (this pipeline's network thread: onnxruntime
        releases the GIL) while matching decodes the current ones."""
        parts = [bits[i: i + OVERLAP_SHOTS] for i in range(0, len(bits), OVERLAP_SHOTS)]
        answers = []
        pending = self._network_thread.submit(self.network_logits, parts[0])
        for index, part in enumerate(parts):
            logits = pending.result()
            if index + 1 < len(parts):
                pending = self._network_thread.submit(self.network_logits, parts[index + 1])
            answers.append(self._match(part, logits))
        return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        bits = as_bool_events(detection_events, self.num_detectors)
        shots = len(bits)
        if shots == 0:
            return DecodeResult(np.zeros((0, self.num_observables), bool), np.zeros(0, np.uint8), np.zeros(0, np.float32))
        if self.mix == 0:  # plain matching: the network would have no say
            observables, confidence = self._match(bits, np.zeros((shots, len(self.geometry.predictable)), np.float32))
        elif shots > OVERLAP_SHOTS:
            observables, confidence = self._decode_overlapped(bits)
        else:
            observables, confidence = self._match(bits, self.network_logits(bits))
        stage = Stage.NETWORK if self.mix > 0 else Stage.MATCHING
        return DecodeResult(observables, np.full(shots, stage, np.uint8), confidence)
