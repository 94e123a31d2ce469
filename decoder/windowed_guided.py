"""Guided matching inside the sliding window: experiments of any length, decoded as rounds arrive,
with the pre-decoder's edge posteriors as each window's per-shot matching weights.

The windows, their commit rule, carried defects and Pauli frame are :mod:`decoder.windowed`'s;
only how a window is matched changes. Each window's graph (the same cut DEM PyMatching gets)
is held by the compiled weighted matcher, and an edge inside the window whose direction the
network knows takes ``(1 - mix) * prior + (mix / temperature) * network`` as its log-odds (edges
leaving at the window's open top keep the prior). The network runs once per time slice, for the
whole block of experiments, on the raw events of the ``window`` slices around it (one call per
push for all the slices it completes, and the weights of a window in one compiled call); a window is
decoded once the slices its last slice's network input needs have arrived (``lookahead``), so
every slice's network output is what the whole experiment's would be. At mix 0 the weights are
the prior's and the answers are windowed matching's.

Example:
    >>> from decoder import CodeSpec
    >>> from decoder.bundle import Bundle
    >>> windowed = guided_windows(Bundle.load("predecoder-fpga"), CodeSpec(3, 3, 0.003))
    >>> events = CodeSpec(3, 20, 0.003).circuit().compile_detector_sampler(seed=1).sample(50)
    >>> windowed.decode_batch(events, rounds=20).shape
    (50, 1)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

from decoder.edges import Direction, EdgeTable, edge_directions
from decoder.errors import NqecError
from decoder.guided import WeightedMatcher, conditional_weights, prior_logits
from decoder.interface import Stage
from decoder.layout import Layout
from decoder.spec import CodeSpec
from decoder.windowed import SlidingWindowDecoder, WindowedExperiments, WindowGraph, xor_updates


# Most experiment-slices in one network call of a push: at d=5 (14 directions) ~66 MB of logits and
# 28 MB (3-round window) to 47 MB (5-round) of inputs. A slice of more experiments is one call.
NETWORK_ROWS = 1 << 15


@dataclasses.dataclass(frozen=True)
class _GuidedParts:
    """What a guided window is made of, before its matcher (picklable: built in any process)."""

    edges: EdgeTable  # of the window's cut DEM; observables = what committing each edge does
    prior: np.ndarray  # float32 [E] log-odds, as PyMatching merges the DEM
    correlations: object  # [E, E] conditional weights (scipy CSR), or None
    predictable: np.ndarray  # [E'] edges with a network logit
    logit_index: np.ndarray  # [E'] into the window's slices' logits flattened [slices, D, H, W]
    carried: np.ndarray
    sizes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _GuidedWindow:
    """A window's weighted matcher and where its edges' network logits are."""

    matcher: WeightedMatcher
    answers: np.ndarray  # uint8 [E, bytes]: what committing each edge does (as _Window's observables), bit-packed
    num_answers: int  # O + carried
    logit_of: np.ndarray  # int64 [E]: each edge's logit in the window's [slices, D, H, W] logits; -1: none
    prior_weight: np.ndarray  # float32 [E]: -prior log-odds, each edge's weight without the network
    carried: np.ndarray
    sizes: tuple[int, ...]


class GuidedSlidingWindowDecoder(SlidingWindowDecoder):
    """:class:`SlidingWindowDecoder` whose windows are matched with the pre-decoder's weights.

    ``runner`` maps network inputs ``float32 [rows, 2 * window, H, W]`` to logits ``[rows, D, H, W]``
    (a bundle's ``run``); ``directions`` is the network's edge vocabulary, ``network_basis`` the
    basis it was trained on (the other basis is seen transposed, as in guided matching).
    ``windows_of``: a decoder with the same recipe (:meth:`cutter`) whose window matchers this one
    shares (they depend on the DEM and the edge vocabulary, not on the network, its mix or temperature)."""

    def __init__(self, spec: CodeSpec, runner, directions: tuple[Direction, ...], window: int, *,
                 mix: float = 0.5, temperature: float = 1.0, correlations: bool = False, network_basis: str = "z",
                 commit: int | None = None, buffer: int | None = None,
                 windows_of: "GuidedSlidingWindowDecoder | None" = None):
        if not 0 <= mix <= 1 or temperature <= 0:
            raise NqecError(f"guided matching needs 0 <= mix <= 1 and temperature > 0, got {mix}, {temperature}")
        if window < 1 or window % 2 == 0:
            raise NqecError(f"the network's window must be an odd number of rounds, got {window}")
        self.lookahead = window // 2
        super().__init__(spec, commit=commit, buffer=buffer, correlations=correlations)
        self.name = "windowed-guided-matching"
        self.runner, self.directions, self.window = runner, tuple(tuple(d) for d in directions), window
        self.mix, self.temperature = mix, temperature
        self._mixes: dict[int, tuple] = {}  # id(window) -> (window, its mixed_weights)
        self._quiet = None  # the network's logits of an all-zero input
        self.stage = Stage.NETWORK if mix > 0 else Stage.MATCHING
        self.transposed = spec.basis != network_basis
        layout = Layout.from_circuit(self._circuit(3))
        layout = layout.transposed() if self.transposed else layout
        _, _, self.height, self.width = layout.shape
        # each slice kind's detectors as cells (type, y, x) of the network's frame: first, bulk, final
        self.slice_cells = [np.stack([layout.type_index, layout.y_index, layout.x_index], axis=1)[layout.t_index == t]
                            for t in (0, 1, 3)]
        if windows_of is not None:  # another network of the same geometry: the same matchers, held once
            if windows_of.cutter() != self.cutter():
                raise NqecError("windows_of must be a guided windowed decoder of the same spec, windows, "
                                "network geometry and matching mode")
            self._windows, self._windows_lock = windows_of._windows, windows_of._windows_lock
            self._short_dems = windows_of._short_dems

    def _frame(self, cells: np.ndarray) -> np.ndarray:
        """Cells ``(slice, type, y, x)`` of the experiment's frame in the network's."""
        if not self.transposed:
            return cells
        return np.stack([cells[:, 0], 1 - cells[:, 1], cells[:, 3], cells[:, 2]], axis=1)

    def _parts(self, graph: WindowGraph) -> _GuidedParts:
        dem = stim.DetectorErrorModel(graph.dem)
        edges = EdgeTable.from_dem(dem, None)
        predictable, logit_index = self._logit_places(edges.detectors, self._frame(graph.cells))
        return _GuidedParts(edges, prior_logits(dem, edges).astype(np.float32),
                            conditional_weights(dem, edges) if self.correlations else None,
                            predictable, logit_index, graph.carried, graph.sizes)

    def _matching_window(self, graph: WindowGraph | _GuidedParts) -> _GuidedWindow:
        parts = graph if isinstance(graph, _GuidedParts) else self._parts(graph)
        edges = parts.edges
        matcher = WeightedMatcher(dataclasses.replace(edges, observables=edges.observables[:, :self.num_observables]),
                                  -parts.prior, parts.correlations)
        logit_of = np.full(edges.num_edges, -1, dtype=np.int64)
        logit_of[parts.predictable] = parts.logit_index
        return _GuidedWindow(matcher, np.packbits(edges.observables, axis=1), edges.observables.shape[1], logit_of,
                             (-parts.prior).astype(np.float32), parts.carried, parts.sizes)

    def network(self, inputs: np.ndarray) -> np.ndarray:
        """The runner's float32 logits of ``inputs``, run only on the rows with an event: a row of
        none (16% of d=5 rows at p=0.003 in a 3-round window) takes the logits of an all-zero
        input, computed once."""
        live = inputs.reshape(len(inputs), int(np.prod(inputs.shape[1:]))).any(axis=1)
        if live.all():
            return np.asarray(self.runner(inputs), dtype=np.float32)
        if self._quiet is None:
            self._quiet = np.asarray(self.runner(np.zeros_like(inputs[:1])), dtype=np.float32)[0]
        out = np.empty((len(inputs), *self._quiet.shape), dtype=np.float32)
        out[~live] = self._quiet
        if live.any():
            out[live] = self.runner(inputs[live])
        return out

    def mixed_weights(self, window: _GuidedWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(logit_of, offset, scale)`` of a window under this decoder's mix and temperature (see
        :meth:`WeightedMatcher.decode_mixed`): ``-((1 - mix) * prior + (mix / temperature) * logit)``
        on the edges the network predicts, ``-prior`` on the others. Per decoder, since decoders of
        other mixes may share its windows (``windows_of``); made once per window."""
        held = self._mixes.get(id(window))
        if held is None or held[0] is not window:
            guided = window.logit_of >= 0 if self.mix > 0 else np.zeros(len(window.logit_of), dtype=bool)
            offset = np.where(guided, (1 - self.mix) * window.prior_weight, window.prior_weight).astype(np.float32)
            scale = np.where(guided, -self.mix / self.temperature, 0).astype(np.float32)
            held = self._mixes[id(window)] = (window, np.where(guided, window.logit_of, -1), offset, scale)
        return held[1:]

    def cutter(self) -> tuple:
        return _cut_guided_family, (self.family, self.directions, self.window, self.correlations,
                                    self.transposed, self.commit, self.buffer)

    def cut_windows(self) -> dict:
        """Every window's parts (cut DEM, edge table, prior, correlations, logit places): all of
        :meth:`prepare` but the matchers. Short experiments' windows are built on first use."""
        return {key: self._parts(self._cut_window(*key)) for key in self.window_keys()}

    def _logit_places(self, pairs: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window edges the network predicts (not those leaving at the open top) and the index
        of each one's logit in the window's ``[slices, D, H, W]`` logits."""
        inside = np.flatnonzero((pairs != len(cells)).all(axis=1))  # detector len(cells): the open top
        oriented = pairs[inside].copy()
        direction, _ = edge_directions(oriented, cells[:, [0, 2, 3, 1]], self.directions)  # (t, y, x, type)
        known = direction >= 0
        t, _, y, x = cells[oriented[known, 0]].T
        index = ((t * len(self.directions) + direction[known]) * self.height + y) * self.width + x
        return inside[known], index.astype(np.int64)

    def open(self, experiments: int = 1) -> "GuidedWindowedExperiments":
        if not self._prepared:
            self.prepare()
        return GuidedWindowedExperiments(self, experiments)


class GuidedWindowedExperiments(WindowedExperiments):
    """Windowed experiments that also keep, per time slice, the raw events the network reads and
    its logits once computed (both only while a window still needs them)."""

    def __init__(self, decoder: GuidedSlidingWindowDecoder, experiments: int):
        super().__init__(decoder, experiments)
        self.dense: dict[int, np.ndarray] = {}  # slice -> float32 [S, 2, H, W] raw events in the network's frame
        self.logits: dict[int, np.ndarray] = {}  # slice -> float32 [S, D, H, W]
        self.received = 0  # slices pushed so far (the final one included once finished)

    @property
    def held_bytes(self) -> int:
        return super().held_bytes + sum(a.nbytes for a in (*self.dense.values(), *self.logits.values()))

    def _remember(self, events: np.ndarray, final: bool = False) -> None:
        decoder = self.decoder
        cells = decoder.slice_cells[2 if final else 0 if self.received == 0 else 1]
        dense = np.zeros((self.experiments, 2, decoder.height, decoder.width), dtype=np.float32)
        dense[:, cells[:, 0], cells[:, 1], cells[:, 2]] = events
        self.dense[self.received] = dense
        self.received += 1

    def _take(self, slices: list[np.ndarray]) -> np.ndarray | None:
        """As the base class's, but first the network runs on every slice whose input window these
        slices complete: one call for a message of many rounds, so the final slice leaves only the
        last ``lookahead + 1`` slices to it. More than NETWORK_ROWS experiment-slices go in parts of
        at most that many (at least one slice each), their windows decoded before the next part's
        network call, so a push of whole experiments (``decode_batch``) holds one part at a time."""
        step = max(1, NETWORK_ROWS // max(1, self.experiments))
        updates = []
        for first in range(0, len(slices), step):
            part = slices[first: first + step]
            for events in part:
                self._remember(events)
            self._run_network(self.received - self.decoder.lookahead)
            updates.append(super()._take(part))
        return xor_updates(updates)

    def finish(self, final_events: np.ndarray) -> np.ndarray:
        final_events = self._check(final_events, self.decoder.final_slice)
        self._remember(final_events, final=True)
        self._run_network(self.received)
        return super().finish(final_events)

    def _run_network(self, end: int) -> None:
        """The network's logits of every slice before ``end`` not yet computed (and still needed),
        in one call for all experiments and slices."""
        decoder = self.decoder
        half = decoder.window // 2
        missing = [t for t in range(self.committed_slices, end) if t not in self.logits]
        if decoder.mix == 0 or not missing:
            return
        inputs = np.zeros((self.experiments, len(missing), 2 * decoder.window, decoder.height, decoder.width),
                          dtype=np.float32)  # slices before the first and after the final one stay zero
        for j, t in enumerate(missing):
            for k, u in enumerate(range(t - half, t + half + 1)):
                if u in self.dense:
                    inputs[:, j, 2 * k: 2 * k + 2] = self.dense[u]
        out = decoder.network(inputs.reshape(-1, *inputs.shape[2:]))
        del inputs
        out = out.reshape(self.experiments, len(missing), int(np.prod(out.shape[1:])))
        for j, t in enumerate(missing):  # each slice its own array: a committed one frees its memory
            self.logits[t] = out[:, j] if len(missing) == 1 else out[:, j].copy()

    def _match(self, window: _GuidedWindow, syndromes: np.ndarray) -> np.ndarray:
        start = self.committed_slices
        logits = (np.concatenate([self.logits[t] for t in range(start, start + len(window.sizes))], axis=1)
                  if self.decoder.mix > 0 else np.zeros((self.experiments, 0), dtype=np.float32))
        packed = window.matcher.decode_mixed(syndromes, logits, *self.decoder.mixed_weights(window), window.answers)
        return np.unpackbits(packed, axis=1, count=window.num_answers).astype(bool)

    def _decode(self, window: _GuidedWindow, commit: int) -> np.ndarray:
        flips = super()._decode(window, commit)
        start = self.committed_slices  # the next window's first slice: earlier ones are never read again
        for t in [t for t in self.logits if t < start]:
            del self.logits[t]
        for t in [t for t in self.dense if t < start - self.decoder.window // 2]:
            del self.dense[t]
        return flips


def _cut_guided_family(spec: CodeSpec, directions, window: int, correlations: bool, transposed: bool,
                       commit: int, buffer: int) -> dict:
    basis = {"z": "x", "x": "z"}[spec.basis] if transposed else spec.basis
    decoder = GuidedSlidingWindowDecoder(spec, None, directions, window, correlations=correlations,
                                         network_basis=basis, commit=commit, buffer=buffer)
    return decoder.cut_windows()


def guided_windows(bundle, spec: CodeSpec, *, commit: int | None = None, buffer: int | None = None,
                   mix: float | None = None, matching: str | None = None,
                   windows_of: GuidedSlidingWindowDecoder | None = None) -> GuidedSlidingWindowDecoder:
    """The windowed guided decoder of a pre-decoder ``bundle`` for ``spec``'s family, with the
    bundle's calibrated mix, temperature and matching mode unless given (``windows_of``: see
    :class:`GuidedSlidingWindowDecoder`)."""
    from decoder.matching import correlations_of

    if bundle.kind != "predecoder":
        raise NqecError(f"model {bundle.name!r} is a {bundle.kind} model; windowed guided matching needs a pre-decoder")
    section = bundle.manifest["predecoder"]
    guided = section.get("guided", {})
    mode = matching or guided.get("matching", "uncorrelated")
    return GuidedSlidingWindowDecoder(spec, bundle.run, tuple(tuple(d) for d in section["directions"]),
                                      section["window"], mix=guided.get("mix", 0.5) if mix is None else mix,
                                      temperature=guided.get("temperature", 1.0), correlations=correlations_of(mode),
                                      network_basis=bundle.spec.basis, commit=commit, buffer=buffer,
                                      windows_of=windows_of)
