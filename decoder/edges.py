"""The matching graph's edges, placed on the layout: the pre-decoder's output vocabulary.

Each edge of the decomposed DEM (a detector pair, or a detector and the boundary) gets an
anchor detector, a direction (stabilizer types and the ``(dt, dy, dx)`` offset to its
partner; boundary edges have partner type ``BOUNDARY``) and its observable mask. The
direction set is small and shared by all positions and distances, so a translation-
invariant network predicts one logit per (anchor cell, direction).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.sparse
import stim

from decoder.errors import NqecError
from decoder.layout import Layout

BOUNDARY = 2  # partner "type" of a boundary edge (0 = X, 1 = Z detectors)
Direction = tuple[int, int, int, int, int]  # (anchor type, partner type, dt, dy, dx)


@dataclasses.dataclass(frozen=True)
class EdgeTable:
    """Edges of a DEM with their anchors, directions, observable masks and mechanism map.

    Example:
        >>> from decoder import CodeSpec
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> table = EdgeTable.from_dem(spec.dem(), Layout.from_circuit(spec.circuit()))
        >>> events, obs, errors = spec.dem().compile_sampler(seed=1).sample(10, return_errors=True)
        >>> flips, obs_flips = table.apply(table.labels(errors))
        >>> bool((flips == events).all() and (obs_flips == obs).all())
        True
    """

    detectors: np.ndarray  # [E, 2] detector ids, partner -1 for the boundary
    observables: np.ndarray  # [E, num_observables] bool
    anchor: np.ndarray  # [E] anchor detector id
    direction: np.ndarray  # [E] index into ``directions``, -1 if not in the given vocabulary
    directions: tuple[Direction, ...]
    mechanism_edges: scipy.sparse.csr_matrix  # [num_errors, E] 0/1: edges of each DEM mechanism
    num_detectors: int

    @property
    def num_edges(self) -> int:
        return len(self.anchor)

    @classmethod
    def from_dem(cls, dem: stim.DetectorErrorModel, layout: Layout | None,
                 directions: tuple[Direction, ...] | None = None) -> "EdgeTable":
        """Build the table; ``directions`` fixes the vocabulary (a model's), else it is derived.
        Without a ``layout`` (a DEM whose detectors have no cells) edges keep their detector
        order and have no direction."""
        if layout is not None and layout.num_detectors != dem.num_detectors:
            raise NqecError(f"layout has {layout.num_detectors} detectors, DEM has {dem.num_detectors}")
        edge_ids: dict[tuple[int, ...], int] = {}
        edge_obs: list[tuple[int, ...]] = []
        rows, cols = [], []
        mechanism = 0
        for inst in dem.flattened():
            if inst.type != "error":
                continue
            for component in error_components(inst.targets_copy()):
                dets = tuple(sorted(t.val for t in component if t.is_relative_detector_id()))
                obs = tuple(sorted(t.val for t in component if t.is_logical_observable_id()))
                if not 1 <= len(dets) <= 2:
                    raise NqecError(f"DEM error {inst} is not graphlike; build the DEM with decompose_errors=True")
                if dets not in edge_ids:
                    edge_ids[dets] = len(edge_obs)
                    edge_obs.append(obs)
                elif edge_obs[edge_ids[dets]] != obs:
                    raise NqecError(f"edge {dets} appears with two observable masks; the DEM is ambiguous for matching")
                rows.append(mechanism)
                cols.append(edge_ids[dets])
            mechanism += 1

        pairs = np.full((len(edge_obs), 2), -1, dtype=np.int64)
        for dets, index in edge_ids.items():
            pairs[index, : len(dets)] = dets
        if layout is None:
            direction, directions = np.full(len(edge_obs), -1, dtype=np.int64), ()
        else:
            cells = np.stack([layout.t_index, layout.y_index, layout.x_index, layout.type_index], axis=1)
            direction, directions = edge_directions(pairs, cells, directions)
        observables = np.zeros((len(edge_obs), dem.num_observables), dtype=bool)
        for index, obs in enumerate(edge_obs):
            observables[index, list(obs)] = True
        matrix = scipy.sparse.csr_matrix((np.ones(len(rows), dtype=np.uint8), (rows, cols)),
                                         shape=(mechanism, len(edge_obs)))
        return cls(detectors=pairs, observables=observables, anchor=pairs[:, 0].copy(), direction=direction,
                   directions=tuple(directions), mechanism_edges=matrix, num_detectors=dem.num_detectors)

    def labels(self, fired_errors: np.ndarray) -> np.ndarray:
        """``bool [shots, E]``: edges flipped an odd number of times by the fired DEM mechanisms."""
        counts = scipy.sparse.csr_matrix(fired_errors.astype(np.uint8)) @ self.mechanism_edges
        return (counts.toarray() & 1).astype(bool)

    def apply(self, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """XOR of the selected edges: ``(detector flips [shots, N], observable flips [shots, O])``."""
        selected = scipy.sparse.csr_matrix(selected.astype(np.uint8))
        det_flips = (selected @ self.incidence).toarray() & 1
        obs_flips = (selected @ scipy.sparse.csr_matrix(self.observables.astype(np.uint8))).toarray() & 1
        return det_flips.astype(bool), obs_flips.astype(bool)

    def without_conflicts(self, selected: np.ndarray) -> np.ndarray:
        """Drop selected edges that share a detector with another selected edge."""
        counts = (scipy.sparse.csr_matrix(selected.astype(np.uint8)) @ self.incidence).toarray()
        crowded = scipy.sparse.csr_matrix((counts > 1).astype(np.uint8))
        return selected & ((crowded @ self.incidence.T).toarray() == 0)

    def lit(self, events: np.ndarray) -> np.ndarray:
        """``bool [shots, E]``: every detector of the edge fired (a boundary edge has one)."""
        pairs = self.detectors
        partner_lit = np.where(pairs[:, 1] >= 0, events[:, np.maximum(pairs[:, 1], 0)], True)
        return events[:, pairs[:, 0]] & partner_lit

    def isolated(self, events: np.ndarray) -> np.ndarray:
        """``bool [shots, E]``: no lit detector other than the edge's own lies within two graph
        hops of the edge's detectors, so matching has no competing explanation nearby."""
        lit = scipy.sparse.csr_matrix(events.astype(np.uint8))
        nearby = (lit @ self.two_hop).toarray()  # lit detectors within two hops, per detector
        pairs = self.detectors
        partner = pairs[:, 1] >= 0
        own = np.where(partner, 1, 0)  # a pair edge's detectors count each other once
        first = nearby[:, pairs[:, 0]] <= own
        second = np.where(partner, nearby[:, np.maximum(pairs[:, 1], 0)] <= 1, True)
        return first & second

    @functools.cached_property
    def two_hop(self) -> scipy.sparse.csr_matrix:
        """``[N, N]`` 0/1: distinct detectors at most two edges apart in the matching graph."""
        pairs = self.detectors[self.detectors[:, 1] >= 0]
        rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
        one = scipy.sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                                      shape=(self.num_detectors, self.num_detectors))
        reach = ((one + one @ one) > 0).astype(np.int32).tolil()
        reach.setdiag(0)
        return reach.tocsr()

    @functools.cached_property
    def incidence(self) -> scipy.sparse.csr_matrix:
        """``[E, N]`` 0/1: the detectors of each edge."""
        rows = np.repeat(np.arange(self.num_edges), 2)
        cols = self.detectors.reshape(-1)
        keep = cols >= 0
        return scipy.sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.uint8), (rows[keep], cols[keep])),
                                       shape=(self.num_edges, self.num_detectors))


def edge_directions(pairs: np.ndarray, cells: np.ndarray, directions: tuple[Direction, ...] | None = None
                    ) -> tuple[np.ndarray, tuple[Direction, ...]]:
    """Orient each edge from its earlier cell (``pairs`` reordered in place) and index its direction
    in ``directions`` (-1 if absent; derived from the edges when None). ``cells``: ``[detectors, 4]``,
    each detector's ``(t, y, x, stabilizer type)``; a partner of -1 is the boundary.

    Example:
        >>> pairs = np.array([[1, 0], [0, -1]])
        >>> cells = np.array([[0, 0, 0, 1], [1, 0, 0, 1]])  # detector 1 is one round after detector 0
        >>> direction, found = edge_directions(pairs, cells)
        >>> pairs.tolist(), [found[i] for i in direction]
        ([[0, 1], [0, -1]], [(1, 1, 1, 0, 0), (1, 2, 0, 0, 0)])
    """
    keys = []
    for index, (a, b) in enumerate(pairs):
        if b >= 0 and tuple(cells[b]) < tuple(cells[a]):
            a, b = b, a
            pairs[index] = a, b
        if b < 0:
            keys.append((int(cells[a, 3]), BOUNDARY, 0, 0, 0))
        else:
            dt, dy, dx = (int(v) for v in cells[b, :3] - cells[a, :3])
            keys.append((int(cells[a, 3]), int(cells[b, 3]), dt, dy, dx))
    if directions is None:
        directions = tuple(sorted(set(keys)))
    lookup = {key: i for i, key in enumerate(directions)}
    return np.array([lookup.get(key, -1) for key in keys], dtype=np.int64), tuple(directions)


def error_components(targets: list[stim.DemTarget]) -> list[list[stim.DemTarget]]:
    """Split an error's targets at ``^`` separators into its graphlike pieces."""
    pieces: list[list[stim.DemTarget]] = [[]]
    for target in targets:
        if target.is_separator():
            pieces.append([])
        else:
            pieces[-1].append(target)
    return pieces
