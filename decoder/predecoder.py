"""The pre-decoder pipeline: a CNN removes confident local edges, PyMatching decodes the rest.

The network sees, for every round ``t``, a window of ``window`` rounds centred on ``t``
with both stabilizer types as channels (``[shots * T, 2 * window, H, W]``) and predicts
one logit per (cell, direction) of round ``t`` (``[shots * T, D, H, W]``).
"""

from __future__ import annotations

import functools

import time
from typing import Callable

import numpy as np

from decoder.edges import Direction, EdgeTable
from decoder.errors import NqecError
from decoder.events import as_bool_events
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.layout import Layout
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec

CHUNK_CELLS = 1 << 18  # (round, y, x) cells per network call (1 << 20 held ~0.5 GiB of activations at d=5 for ~the same speed)
Runner = Callable[[np.ndarray], np.ndarray]  # float32 windows [N, 2W, H, W] -> logits [N, D, H, W]


def probability_logit(probability: float) -> float:
    """The logit above which a network's output means a probability above ``probability``."""
    return float(np.log(probability / (1 - probability)))


def round_windows(dense: np.ndarray, window: int) -> np.ndarray:
    """Dense events ``[shots, 2, T, H, W]`` -> per-round windows ``[shots * T, 2 * window, H, W]``.

    Rounds outside the experiment are zero. Channel ``2 * k + type`` holds round ``t - window // 2 + k``.
    """
    if window < 1 or window % 2 == 0:
        raise NqecError(f"window must be an odd number of rounds >= 1, got {window}")
    shots, types, rounds, height, width = dense.shape
    half = window // 2
    padded = np.zeros((shots, types, rounds + 2 * half, height, width), dtype=np.float32)
    padded[:, :, half: half + rounds] = dense
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=2)  # [S, 2, T, H, W, window]
    return np.ascontiguousarray(views.transpose(0, 2, 5, 1, 3, 4)).reshape(shots * rounds, window * types, height, width)


class PreDecoderGeometry:
    """Everything spec-specific the pre-decoder needs: layout, edges and where each edge's logit is.

    ``network_basis`` is the memory basis the network was trained on. A spec in the other basis is
    seen in the transposed, type-exchanged frame (:meth:`Layout.transposed`): the network's inputs
    and the edges' anchors and directions are all in that frame, so a Z-basis network decodes an
    X-basis experiment on the experiment's own edges and DEM.

    Example:
        >>> from decoder import CodeSpec
        >>> z = PreDecoderGeometry(CodeSpec(5, 5, 0.003))
        >>> x = PreDecoderGeometry(CodeSpec(5, 5, 0.003, basis="x"), z.directions)
        >>> bool((x.edges.direction >= 0).all())  # every X-basis edge has a direction of the Z-basis network
        True
    """

    def __init__(self, spec: CodeSpec, directions: tuple[Direction, ...] | None = None, network_basis: str = "z"):
        self.spec = spec
        own = Layout.from_circuit(spec.circuit())
        self.layout = own if spec.basis == network_basis else own.transposed()
        self.edges = EdgeTable.from_dem(spec.dem(), self.layout, directions)
        self.directions = self.edges.directions
        _, rounds, height, width = self.layout.shape
        self.logit_shape = (rounds, len(self.directions), height, width)
        known = self.edges.direction >= 0
        self.predictable = np.flatnonzero(known)  # edges the network has a direction for
        anchor = self.edges.anchor[known]
        self.logit_index = np.ravel_multi_index(
            (self.layout.t_index[anchor], self.edges.direction[known], self.layout.y_index[anchor],
             self.layout.x_index[anchor]), self.logit_shape)

    @property
    def chunk_shots(self) -> int:
        """Shots per network call: about CHUNK_CELLS (round, y, x) cells, so activation memory is
        bounded at any distance."""
        rounds, _, height, width = self.logit_shape
        return int(np.clip(CHUNK_CELLS // (rounds * height * width), 64, 4096))

    @property
    def logit_mask(self) -> np.ndarray:
        """``bool [T, D, H, W]``: True where an edge has its logit."""
        mask = np.zeros(int(np.prod(self.logit_shape)), dtype=bool)
        mask[self.logit_index] = True
        return mask.reshape(self.logit_shape)

    def targets(self, edge_labels: np.ndarray) -> np.ndarray:
        """Edge labels ``[shots, E]`` -> float32 targets ``[shots * T, D, H, W]`` (0 where no edge)."""
        shots = edge_labels.shape[0]
        flat = np.zeros((shots, int(np.prod(self.logit_shape))), dtype=np.float32)
        flat[:, self.logit_index] = edge_labels[:, self.predictable]
        return flat.reshape(shots * self.logit_shape[0], *self.logit_shape[1:])

    def edge_logits(self, logits: np.ndarray, shots: int) -> np.ndarray:
        """Network output ``[shots * T, D, H, W]`` -> ``[shots, E_predictable]`` edge logits."""
        return logits.reshape(shots, -1)[:, self.logit_index]


class NetworkPipeline(Decoder):
    """What every pipeline around a pre-decoder network shares: its geometry on ``spec``, the
    network (``runner``, a ``window`` of rounds per input, trained on ``network_basis``) and its
    chunk size."""

    def __init__(self, spec: CodeSpec, runner: Runner, directions: tuple[Direction, ...], window: int,
                 network_basis: str = "z"):
        self.spec = spec
        self.geometry = PreDecoderGeometry(spec, directions, network_basis)
        self.chunk_shots = self.geometry.chunk_shots
        self.runner = runner
        self.window = window
        self.num_detectors = spec.dem().num_detectors
        self.num_observables = spec.dem().num_observables

    @functools.cached_property
    def _input_index(self) -> np.ndarray:
        """For each cell of a shot's network inputs ``[T, 2 * window, H, W]``, the detector it shows
        (-1: none, a zero): the inputs are one gather from the events, what
        ``round_windows(layout.to_dense(bits))`` computes in several passes."""
        layout = self.geometry.layout
        detector_at = np.full(int(np.prod(layout.shape)), -1, dtype=np.int64)
        detector_at[layout.flat_index] = np.arange(layout.num_detectors)
        windows = round_windows(detector_at.reshape(1, *layout.shape).astype(np.float32) + 1, self.window)
        return windows.astype(np.int64).reshape(-1) - 1  # round_windows pads with 0, i.e. -1 here

    def network_inputs(self, bits: np.ndarray) -> np.ndarray:
        """``float32 [S * T, 2 * window, H, W]``: the network's per-round windows of ``bool [S, N]`` events."""
        lit = np.zeros((len(bits), bits.shape[1] + 1), dtype=np.float32)  # the last column: cells with no detector
        lit[:, :-1] = bits
        _, rounds, height, width = self.geometry.layout.shape
        return lit[:, self._input_index].reshape(len(bits) * rounds, 2 * self.window, height, width)

    def network_logits(self, bits: np.ndarray) -> np.ndarray:
        """``float32 [S, E_predictable]``: the network's logit of every edge it predicts, per shot."""
        return self.geometry.edge_logits(self.runner(self.network_inputs(bits)), len(bits))


class PreDecoderPipeline(NetworkPipeline):
    """``predecoder+matching``: apply edges with probability > ``threshold``, match the residual.

    With ``require_lit`` an edge is applied only if all its detectors fired, so the
    network can remove detection events but never add them. Selected edges that share a
    detector are left to matching. With ``isolated_only`` an edge is applied only where its
    lit detectors have no other lit neighbour in the matching graph, the configurations in
    which removing it cannot change what matching does with the rest.

    Per shot, the stage is NETWORK if the network applied an edge (MATCHING otherwise), and the
    confidence is the lowest ``|p - 0.5|`` among the applied edges' probabilities (0.5 where
    none was applied: matching alone answered).
    """

    name = "predecoder+matching"

    def __init__(self, spec: CodeSpec, runner: Runner, directions: tuple[Direction, ...], window: int,
                 threshold: float = 0.5, require_lit: bool = True, isolated_only: bool = False,
                 correlations: bool = False, network_basis: str = "z"):
        if not 0 < threshold < 1:
            raise NqecError(f"pre-decoder threshold must be in (0, 1), got {threshold}")
        super().__init__(spec, runner, directions, window, network_basis)
        self.logit_threshold = probability_logit(threshold)
        self.require_lit = require_lit
        self.isolated_only = isolated_only
        self.matching = MatchingDecoder(spec.dem(), correlations=correlations)

    def predecode(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns ``(residual events, observable flips of applied edges, edges applied per shot,
        float32 confidence per shot)`` (confidence: the lowest |p - 0.5| of an applied edge, else 0.5)."""
        bits = as_bool_events(events, self.num_detectors)
        shots = bits.shape[0]
        geometry = self.geometry
        logits = self.network_logits(bits)
        selected = np.zeros((shots, geometry.edges.num_edges), dtype=bool)
        selected[:, geometry.predictable] = logits > self.logit_threshold
        if self.require_lit:
            selected &= geometry.edges.lit(bits)
        selected = geometry.edges.without_conflicts(selected)
        if self.isolated_only:
            selected &= geometry.edges.isolated(bits)
        det_flips, obs_flips = geometry.edges.apply(selected)
        certainty = np.full(selected.shape, 0.5, np.float32)
        certainty[:, geometry.predictable] = 1 / (1 + np.exp(-np.abs(logits))) - 0.5  # |sigmoid - 0.5|
        confidence = np.where(selected, certainty, 0.5).min(axis=1).astype(np.float32)
        return bits ^ det_flips, obs_flips, selected.sum(axis=1), confidence

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        bits = as_bool_events(detection_events, self.num_detectors)
        if bits.shape[0] == 0:
            return DecodeResult(np.zeros((0, self.num_observables), bool), np.zeros(0, np.uint8), np.zeros(0, np.float32))
        residual, obs_flips, applied, confidence = self.predecode(bits)
        start = time.perf_counter()
        observables = self.matching.decode_batch(residual) ^ obs_flips
        matching_seconds = time.perf_counter() - start
        return DecodeResult(
            observables=observables,
            stage=np.where(applied > 0, Stage.NETWORK, Stage.MATCHING).astype(np.uint8),
            confidence=confidence,
            extra={"defects_before": bits.sum(axis=1), "defects_after": residual.sum(axis=1),
                   "residual_matching_seconds": np.full(len(bits), matching_seconds / len(bits))},
        )
