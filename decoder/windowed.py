"""Sliding-window decoding of memory experiments of any number of rounds.

An experiment of ``R`` rounds has ``R + 1`` detector time slices: slice 0 (the first round's
detectors), slices ``1..R-1`` (bulk rounds) and slice ``R`` (from the final data measurement).
A window spans ``commit + buffer`` slices. Matching decodes the window; the edges whose earlier
detector lies in the first ``commit`` slices are committed: their observable flips join the
experiment's Pauli frame, and the detectors they reach in the buffer are flipped (the defects
a commit leaves at the window's edge are carried into the next window). The window then moves
``commit`` slices on. The last window runs to the final slice and answers the observables.

Window matching graphs come from a few window DEMs, cut out of short reference circuits: the
first window, the bulk window, and one final window per possible length; never one DEM per
experiment length. Detectors outside a window are dropped from its error mechanisms (edges that
leave the window become boundary edges). Memory per open experiment is one window of events.

The window loop is compiled (``decoder/window_loop.cc``): each window's graph is built by PyMatching's
own C++ driver from the window's DEM, so its answers are ``pymatching.Matching``'s bit for bit, and
a push of many slices (``push_slices``, ``decode_batch``) decodes all the windows they complete with
no Python per window. Experiments whose ``_match`` is overridden (windowed guided matching) keep the
Python loop, which is also the oracle the compiled loop is tested against.

Example:
    >>> from decoder import CodeSpec
    >>> windowed = SlidingWindowDecoder(CodeSpec(3, 3, 0.003), commit=3, buffer=3)
    >>> spec = CodeSpec(3, 20, 0.003)
    >>> events, obs = spec.circuit().compile_detector_sampler(seed=1).sample(100, separate_observables=True)
    >>> windowed.decode_batch(events, rounds=20).shape
    (100, 1)
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
import weakref
import zlib

import numpy as np
import stim

from decoder._weighted_matching import WindowMatching, WindowStream
from decoder.errors import NqecError
from decoder.events import as_bool_events
from decoder.interface import DecodeResult, Decoder, Stage
from decoder.layout import Layout
from decoder.spec import CodeSpec

WARM_UP = 2  # bulk windows are cut this many slices into a reference circuit, clear of its start


@dataclasses.dataclass(frozen=True)
class _Window:
    """One window's matching graph. Its observables say what committing the window's first
    ``commit`` slices does: ids ``0..O-1`` the committed edges' logical flips, ``O + j`` the
    parity of committed edges reaching buffer detector ``carried[j]``. A final window commits
    everything and carries nothing."""

    matcher: WindowMatching  # PyMatching's graph of the window's DEM, built and matched in C++ (one batch at a time)
    carried: np.ndarray  # buffer detectors a committed edge can reach
    sizes: tuple[int, ...]  # detectors per slice

    def decode(self, syndromes: np.ndarray, correlations: bool) -> np.ndarray:
        return self.matcher.decode_batch(syndromes.view(np.uint8), correlations)


def window_matching(dem: str, carried: np.ndarray, correlations: bool) -> WindowMatching:
    """The compiled matcher of a window's cut DEM (text): the error instructions of the DEM
    ``pymatching.Matching.from_detector_error_model`` would read (it parses ``str(dem)``), as Stim parses
    them, handed to PyMatching's driver in C++; its answers are that Matching's, bit for bit, in
    both modes (``correlations``: the graph can decode with correlations)."""
    parsed = stim.DetectorErrorModel(str(stim.DetectorErrorModel(dem)))
    probabilities, starts, targets = [], [0], []
    for instruction in parsed.flattened():
        if instruction.type != "error":
            continue
        probabilities.append(instruction.args_copy()[0])
        targets += [target.val if target.is_relative_detector_id() else -1 if target.is_separator() else -2 - target.val
                    for target in instruction.targets_copy()]
        starts.append(len(targets))
    return WindowMatching(parsed.num_detectors, parsed.num_observables, np.array(probabilities, dtype=np.float64),
                          np.array(starts, dtype=np.int64), np.array(targets, dtype=np.int64),
                          np.asarray(carried, dtype=np.int64), correlations)


def _cut_dem(dem: stim.DetectorErrorModel, keep: np.ndarray, past: np.ndarray,
             recode=None, num_observables: int | None = None) -> stim.DetectorErrorModel:
    """The DEM restricted to the detectors where ``keep``, plus one more detector standing for
    all later ones: the window's open top, joined to the space boundary by a free edge (p = 0.5,
    weight 0), yet a node of its own, so that edges to the top and to the space boundary never
    merge into one observable mask (PyMatching's boundary nodes would do, but its correlated
    mode rejects them). Pieces
    that reach a ``past`` detector go: earlier commits already explained those (their defects
    in the window were carried in), and so do pieces left with no kept detector.

    ``recode(detectors, observables)`` (window detector indices, observable ids of a piece), if
    given, says which observable ids the piece carries instead of its own (``num_observables``
    of them in all)."""
    new_index = (np.cumsum(keep) - 1).tolist()
    time_boundary = int(keep.sum())
    keep, past = keep.tolist(), past.tolist()  # Python lists: this loop runs over every error of the DEM
    lines = []
    for line in str(dem.flattened()).splitlines():  # the text: ~8x faster than stim's per-target objects
        if not line.startswith("error"):
            continue
        head, _, body = line.partition(" ")
        pieces = []
        for piece in body.split(" ^ "):
            detectors, observables = [], []
            for target in piece.split():
                (detectors if target[0] == "D" else observables).append(int(target[1:]))
            kept = [new_index[d] for d in detectors if keep[d]]
            if not kept or any(past[d] for d in detectors):
                continue
            if recode is not None:
                observables = recode(kept, observables)
            if len(kept) < len(detectors):  # it leaves the window at its open top
                kept.append(time_boundary)
            pieces.append(" ".join([f"D{d}" for d in kept] + [f"L{o}" for o in observables]))
        if pieces:
            lines.append(f"{head} " + " ^ ".join(pieces))
    lines.append(f"error(0.5) D{time_boundary}")
    lines += [f"logical_observable L{o}" for o in range(dem.num_observables if recode is None else num_observables)]
    return stim.DetectorErrorModel("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class WindowGraph:
    """A window's cut DEM (text) and its commit bookkeeping: what :meth:`SlidingWindowDecoder.cut_windows`
    computes, picklable, so another process can do the (pure-Python, GIL-holding) cutting."""

    dem: str
    carried: np.ndarray
    sizes: tuple[int, ...]
    cells: np.ndarray  # [window detectors, 4]: (slice in the window, stabilizer type, y, x) of each kept detector


WindowKey = tuple[bool, int, bool]  # (first, length in slices, final)


def _packed(graph: WindowGraph) -> bytes:
    """The graph, compressed (kept for a window built later)."""
    return zlib.compress(pickle.dumps(graph), 1)


def _unpacked(packed: bytes) -> WindowGraph:
    return pickle.loads(zlib.decompress(packed))


class SlidingWindowDecoder:
    """Matching over sliding windows for rotated-surface-code memory experiments of any length.

    ``spec`` names the family (distance, noise, basis; its ``rounds`` are ignored); ``commit``
    and ``buffer`` are window sizes in rounds (default: the distance each); ``correlations``
    selects PyMatching's correlated mode inside each window. ``graphs_of`` (a correlated decoder of
    the same spec and window sizes) lends an uncorrelated decoder its window graphs: a graph built
    for correlations decodes without them exactly as a plain one does, so the twins hold one set.

    A window commits only what its buffer has looked past, so ``buffer >= 1`` (0, committing
    edges at the window's open top, gave 2.4-3.2x the logical errors of whole-experiment matching
    at d=3). A buffer below the distance costs accuracy: at d=5, 40 rounds, p=0.004, buffer 2
    gave 13% more logical errors than whole-experiment matching, buffer 1 80%; buffer 3-5 within 2%.
    """

    lookahead = 0  # slices beyond a window that must have arrived before it is decoded
    stage = Stage.MATCHING  # what answers (the interface's per-shot stage)

    def __init__(self, spec: CodeSpec, *, commit: int | None = None, buffer: int | None = None,
                 correlations: bool = False, graphs_of: "SlidingWindowDecoder | None" = None):
        self.family = spec
        self.commit = spec.distance if commit is None else commit
        self.buffer = spec.distance if buffer is None else buffer
        if self.commit < 1 or self.buffer < 1:
            raise NqecError(f"a window needs commit >= 1 and buffer >= 1 rounds (default: the distance each), "
                            f"got commit={self.commit} and buffer={self.buffer}")
        self.correlations = correlations
        if graphs_of is not None and (not graphs_of.correlations or (graphs_of.family, graphs_of.commit, graphs_of.buffer)
                                      != (spec, self.commit, self.buffer)):
            raise NqecError("graphs_of must be a correlated windowed decoder of the same spec and window sizes")
        self._graphs_of = graphs_of  # a correlated twin whose graphs also decode without correlations
        self.name = "windowed-matching-correlated" if correlations else "windowed-matching"
        reference = Layout.from_circuit(self._circuit(WARM_UP + self.span + 2))
        counts = np.bincount(reference.t_index)
        self.first_slice, self.bulk_slice, self.final_slice = int(counts[0]), int(counts[1]), int(counts[-1])
        self.num_observables = self._circuit(1).num_observables
        self._windows: dict[tuple[bool, int, bool], _Window] = {}
        self._windows_lock = threading.Lock()  # each window graph is built once, even by concurrent first calls
        self._short_dems: dict[WindowKey, bytes] = {}  # short experiments' window graphs, compressed (_packed)
        self._prepare_lock = threading.Lock()
        self._prepared = False

    @property
    def span(self) -> int:
        """Slices per window."""
        return self.commit + self.buffer

    def slice_sizes(self, rounds: int) -> list[int]:
        """Detectors in each of the ``rounds + 1`` time slices of a ``rounds``-round experiment."""
        if rounds < 1:
            raise NqecError(f"an experiment needs rounds >= 1, got {rounds}")
        return [self.first_slice, *[self.bulk_slice] * (rounds - 1), self.final_slice]

    def _circuit(self, rounds: int) -> stim.Circuit:
        return dataclasses.replace(self.family, rounds=rounds).circuit()

    def _window(self, first: bool, length: int, final: bool) -> _Window:
        """The window of ``length`` slices: at the experiment's start (``first``) or in the bulk,
        ending at the final data-measurement slice (``final``) or open at its top. Built on first
        use, once, and kept by this decoder (its graphs go when it goes)."""
        if self._graphs_of is not None:
            return self._graphs_of._window(first, length, final)
        key = (first, length, final)
        window = self._windows.get(key)
        if window is None:
            with self._windows_lock:
                window = self._windows.get(key)
                if window is None:
                    packed = self._short_dems.pop(key, None)
                    graph = self._cut_window(*key) if packed is None else _unpacked(packed)
                    window = self._windows[key] = self._matching_window(graph)
        return window

    def _matching_window(self, graph: WindowGraph) -> _Window:
        matcher = window_matching(graph.dem, graph.carried, self.correlations)
        # the matcher sets up its solver (and, with correlations, its second pass) on the first decodes
        # that have detection events: do it now, not on a live experiment
        warm = np.random.default_rng(0).random((8, matcher.num_detectors)) < 0.02
        matcher.decode_batch(warm.view(np.uint8), self.correlations)
        return _Window(matcher, graph.carried, graph.sizes)

    def _cut_window(self, first: bool, length: int, final: bool) -> WindowGraph:
        start = 0 if first else WARM_UP
        rounds = start + length - 1 if final else start + length + 2
        circuit = self._circuit(rounds)
        layout = Layout.from_circuit(circuit)
        slices = layout.t_index
        keep = (slices >= start) & (slices < start + length)
        full = circuit.detector_error_model(decompose_errors=True)
        slice_of = slices[keep] - start
        sizes = tuple(int(n) for n in np.bincount(slice_of, minlength=length))
        cells = np.stack([slice_of, layout.type_index[keep], layout.y_index[keep], layout.x_index[keep]], axis=1)
        if final:
            return WindowGraph(str(_cut_dem(full, keep, slices < start)), np.zeros(0, dtype=np.int64), sizes, cells)
        carried = np.flatnonzero(slice_of == self.commit)  # committed edges reach one slice on
        column = {int(d): self.num_observables + j for j, d in enumerate(carried)}
        slice_list = slice_of.tolist()

        def committed(detectors: list[int], observables: list[int]) -> list[int]:
            if min(slice_list[d] for d in detectors) >= self.commit:
                return []
            in_buffer = [d for d in detectors if slice_list[d] >= self.commit]
            if any(d not in column for d in in_buffer):
                raise NqecError("a committed edge reaches past the first buffer slice")
            return observables + [column[d] for d in in_buffer]

        dem = _cut_dem(full, keep, slices < start, committed, self.num_observables + len(carried))
        return WindowGraph(str(dem), carried, sizes, cells)

    def window_keys(self) -> list[WindowKey]:
        """The windows an experiment of at least one window's length can need, built by
        :meth:`prepare`: the first and bulk windows, and each final-window length. (A shorter
        experiment is one window, whole: its graph is built on first use, from the cut DEM
        :meth:`prepare` keeps, ~30 ms at d=9.)"""
        return [(True, self.span, False), (False, self.span, False),
                *[(False, length, True) for length in range(self.buffer + 1, self.span + 1)]]

    def _short_keys(self) -> list[WindowKey]:
        return [(True, length, True) for length in range(2, self.span + 1)]

    def cutter(self) -> tuple:
        """``(function, arguments)``: a picklable recipe whose call returns what :meth:`prepare` takes,
        the slow part of preparing, to run in another process (decoders with equal recipes share it)."""
        return _cut_family, (self.family, self.commit, self.buffer)

    def cut_windows(self) -> dict[WindowKey, WindowGraph]:
        """The cut DEM of every window, short experiments' included (the slow, pure-Python part of
        :meth:`prepare`; the same for both matching modes), e.g. to compute in another process and
        pass to :meth:`prepare`."""
        return {key: self._cut_window(*key) for key in [*self.window_keys(), *self._short_keys()]}

    def prepare(self, graphs: dict[WindowKey, WindowGraph] | None = None) -> "SlidingWindowDecoder":
        """Build (and run once) every window's matching graph, so that no decode waits for one to be
        built; ``graphs`` (from :meth:`cut_windows` of a decoder with the same spec and window sizes)
        saves cutting the DEMs here."""
        if self._graphs_of is not None:
            self._graphs_of.prepare(graphs)
            self._prepared = True
            return self
        with self._prepare_lock:
            for key in self.window_keys():
                if graphs is not None and key not in self._windows:
                    with self._windows_lock:
                        self._windows.setdefault(key, self._matching_window(graphs[key]))
                self._window(*key)
            if graphs is not None:
                self._short_dems.update({key: _packed(graphs[key]) for key in self._short_keys() if key in graphs})
            self._prepared = True
        return self

    @property
    def prepared(self) -> bool:
        """Whether every window graph is built (:meth:`prepare` has run)."""
        return self._prepared

    def open(self, experiments: int = 1) -> "WindowedExperiments":
        """Start decoding ``experiments`` experiments whose slices will be pushed together
        (the first call builds every window graph: see :meth:`prepare`)."""
        if not self._prepared:
            self.prepare()
        return WindowedExperiments(self, experiments)

    def decode_batch(self, detection_events: np.ndarray, rounds: int) -> np.ndarray:
        """Decode whole ``rounds``-round experiments (bool or bit-packed, in Stim's detector order)
        window by window: ``bool [shots, num_observables]``."""
        sizes = self.slice_sizes(rounds)
        bits = as_bool_events(detection_events, sum(sizes))
        stream = self.open(len(bits))
        stream.push_slices(bits[:, :-sizes[-1]], rounds)
        return stream.finish(bits[:, -sizes[-1]:])


class WindowedDecoder(Decoder):
    """A windowed decoder as a fixed-length :class:`~decoder.interface.Decoder` for experiments of
    ``rounds`` rounds: what ``nqec evaluate --windowed`` measures against whole-experiment matching.

    Example:
        >>> from decoder import CodeSpec
        >>> decoder = WindowedDecoder(SlidingWindowDecoder(CodeSpec(3, 3, 0.003)), rounds=12)
        >>> events = CodeSpec(3, 12, 0.003).circuit().compile_detector_sampler(seed=1).sample(20)
        >>> decoder.name, decoder.decode_batch(events).shape
        ('windowed-matching', (20, 1))
    """

    chunk_shots = 1024

    def __init__(self, windowed: SlidingWindowDecoder, rounds: int):
        self.windowed, self.rounds = windowed, rounds
        self.name = windowed.name
        self.num_detectors = sum(windowed.slice_sizes(rounds))
        self.num_observables = windowed.num_observables

    def decode_chunk(self, detection_events: np.ndarray) -> DecodeResult:
        observables = self.windowed.decode_batch(detection_events, self.rounds)
        shots = len(observables)
        return DecodeResult(observables, np.full(shots, self.windowed.stage, np.uint8), np.full(shots, 0.5, np.float32))


def _cut_family(spec: CodeSpec, commit: int, buffer: int) -> dict[WindowKey, WindowGraph]:
    return SlidingWindowDecoder(spec, commit=commit, buffer=buffer).cut_windows()


class WindowedExperiments:
    """Experiments advancing slice by slice: ``push`` each slice's events (or ``push_slices`` several
    at once), ``finish`` with the final data-measurement slice. Holds at most one window of events per
    experiment.

    The windows are decoded by the compiled loop (:class:`~decoder._weighted_matching.WindowStream`),
    unless a subclass matches windows its own way (overrides ``_match``, as windowed guided matching
    does): then by the Python loop below (``_decode``), the compiled loop's oracle.

    Example (one experiment whose rounds arrive in messages of 100):
        >>> from decoder import CodeSpec
        >>> decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.003))
        >>> sizes = decoder.slice_sizes(250)  # slice 0, rounds 1..249, the final data-measurement slice
        >>> events = CodeSpec(3, 250, 0.003).circuit().compile_detector_sampler(seed=1).sample(1)
        >>> stream, bounds = decoder.open(1), np.cumsum([0, *sizes])
        >>> for first in range(0, 250, 100):
        ...     count = min(100, 250 - first)
        ...     update = stream.push_slices(events[:, bounds[first]:bounds[first + count]], count)
        >>> stream.committed_slices, stream.finish(events[:, bounds[-2]:]).shape
        (246, (1, 1))
    """

    def __init__(self, decoder: SlidingWindowDecoder, experiments: int):
        self.decoder = decoder
        self.experiments = experiments
        self.slices: list[np.ndarray] = []  # uncommitted slices (carried flips applied), Python loop
        self.committed_slices = 0
        self.finished = False
        self._stream = None  # the compiled loop's state, if it decodes these experiments
        if type(self)._match is WindowedExperiments._match:
            self._stream = WindowStream(
                decoder._window(True, decoder.span, False).matcher, decoder._window(False, decoder.span, False).matcher,
                experiments, decoder.first_slice, decoder.bulk_slice, decoder.final_slice, decoder.commit,
                decoder.span, decoder.lookahead, decoder.correlations)
            self.frame = self._stream.frame  # committed observable flips (the loop updates this array in place)
        else:
            self.frame = np.zeros((experiments, decoder.num_observables), dtype=bool)

    @property
    def held_bytes(self) -> int:
        """Bytes of event data these experiments hold: the buffered slices (the arrays they live
        in, whole) and the Pauli frame. Bounded by one window, whatever the experiment's length."""
        if self._stream is not None:
            return self._stream.held_bytes
        owners = {id(owner): owner for owner in (s if s.base is None else s.base for s in self.slices)}
        return self.frame.nbytes + sum(owner.nbytes for owner in owners.values())

    @property
    def next_slice(self) -> int:
        """Index (from the experiment's start) of the slice ``push`` expects next."""
        return self._stream.next_slice if self._stream is not None else self.committed_slices + len(self.slices)

    def _check(self, events: np.ndarray, size: int, what: str | None = None) -> np.ndarray:
        if self.finished:
            raise NqecError("these experiments are finished; open new ones")
        events = as_bool_events(events, size)
        if len(events) != self.experiments:
            raise NqecError(f"expected {what or f'slice {self.next_slice}'} of {self.experiments} experiments, "
                            f"got {len(events)} rows")
        return events

    def push(self, events: np.ndarray) -> np.ndarray | None:
        """Add the next slice (``[experiments, detectors of the slice]``, bool or bit-packed).

        Returns the observable flips committed by the window this slice completed (the
        Pauli-frame update), or None when no window was completed."""
        return self.push_slices(events, 1)

    def push_slices(self, events: np.ndarray, count: int) -> np.ndarray | None:
        """Add the next ``count`` slices at once: ``[experiments, their detectors]`` in Stim's detector
        order (slice after slice), bool or bit-packed as a whole, e.g. a message of ``count`` rounds.

        Returns the XOR of the observable flips committed by the windows they completed (the
        Pauli-frame update), or None when none was: what ``count`` pushes of one slice add up to."""
        decoder = self.decoder
        start = self.next_slice
        size = decoder.bulk_slice * count - (decoder.bulk_slice - decoder.first_slice) * (start == 0 and count > 0)
        what = f"slices {start}..{start + count - 1}" if count != 1 else None
        events = self._check(events, size, what)
        if self._stream is None:  # the Python loop: slice by slice
            sizes = [decoder.first_slice if start + k == 0 else decoder.bulk_slice for k in range(count)]
            return self._take(np.split(events, np.cumsum(sizes)[:-1], axis=1) if count else [])
        update = self._stream.push(events.view(np.uint8), count)
        self.committed_slices = self._stream.committed_slices
        return update

    def _take(self, slices: list[np.ndarray]) -> np.ndarray | None:
        """The Python loop: buffer the next slices (checked), decode every window they complete;
        returns the XOR of the flips committed, or None when no window was."""
        decoder = self.decoder
        updates = []
        for events in slices:
            self.slices.append(events.copy())
            if len(self.slices) >= decoder.span + decoder.lookahead:
                window = decoder._window(self.committed_slices == 0, decoder.span, False)
                updates.append(self._decode(window, commit=decoder.commit))
        return xor_updates(updates)

    def finish(self, final_events: np.ndarray) -> np.ndarray:
        """Add the final data-measurement slice and decode the rest: ``bool [experiments, O]``."""
        decoder = self.decoder
        if self._stream is not None:
            self._stream.push_final(self._check(final_events, decoder.final_slice).view(np.uint8))
            window = decoder._window(self._stream.committed_slices == 0, self._stream.held_slices, True)
            self._stream.decode_rest(window.matcher)
            self.committed_slices = self._stream.committed_slices
            self.finished = True
            return self.frame.copy()
        self.slices.append(self._check(final_events, decoder.final_slice).copy())
        while len(self.slices) > decoder.span:  # windows a lookahead held back: the same windows as without one
            self._decode(decoder._window(self.committed_slices == 0, decoder.span, False), commit=decoder.commit)
        window = decoder._window(self.committed_slices == 0, len(self.slices), True)
        self._decode(window, commit=len(self.slices))
        self.finished = True
        return self.frame.copy()

    def _decode(self, window: _Window, commit: int) -> np.ndarray:
        """Match the window's slices (the first ones buffered), commit the first ``commit`` of
        them; returns the flips committed. (The Python loop; the compiled one does the same.)"""
        span = len(window.sizes)
        syndrome = np.concatenate(self.slices[:span], axis=1)
        padded = np.zeros((self.experiments, syndrome.shape[1] + 1), dtype=bool)  # + the window's open top
        padded[:, :-1] = syndrome
        answer = self._match(window, padded)
        observables = self.decoder.num_observables
        flips = answer[:, :observables]
        syndrome[:, window.carried] ^= answer[:, observables:]
        self.frame ^= flips
        done = int(np.sum(window.sizes[:commit]))
        rest = syndrome[:, done:].copy()  # the buffer alone stays: not the whole window behind a view
        kept = np.split(rest, np.cumsum(window.sizes[commit:-1]), axis=1) if rest.shape[1] else []
        self.slices = kept + self.slices[span:]
        self.committed_slices += commit
        return flips

    def _match(self, window: _Window, syndromes: np.ndarray) -> np.ndarray:
        """The window's answer, ``bool [experiments, O + carried]`` (see :class:`_Window`)."""
        return window.decode(syndromes, self.decoder.correlations)


def xor_updates(updates: list[np.ndarray | None]) -> np.ndarray | None:
    """The XOR of the Pauli-frame updates that are not None; None when none is."""
    updates = [update for update in updates if update is not None]
    return np.bitwise_xor.reduce(updates) if updates else None


# each decoder's pymatching.Matching per window (key, mode), for PyMatchingWindows; they go with the decoder
_PYMATCHING_WINDOWS: "weakref.WeakKeyDictionary[SlidingWindowDecoder, dict]" = weakref.WeakKeyDictionary()


class PyMatchingWindows(WindowedExperiments):
    """Windowed matching as it was before its loop was compiled: the Python loop (``_decode``), each
    window matched by a ``pymatching.Matching`` of its cut DEM (built on first use, once per decoder).
    The reference: the oracle of the compiled loop's tests, the baseline of ``nqec bench stream``.

    Example:
        >>> from decoder import CodeSpec
        >>> decoder = SlidingWindowDecoder(CodeSpec(3, 3, 0.003)).prepare()
        >>> sizes = decoder.slice_sizes(20)
        >>> events = CodeSpec(3, 20, 0.003).circuit().compile_detector_sampler(seed=1).sample(50)
        >>> reference = PyMatchingWindows(decoder, 50)
        >>> _ = reference.push_slices(events[:, :-sizes[-1]], 20)
        >>> bool((reference.finish(events[:, -sizes[-1]:]) == decoder.decode_batch(events, rounds=20)).all())
        True
    """

    def _match(self, window: _Window, syndromes: np.ndarray) -> np.ndarray:
        import pymatching

        decoder = self.decoder
        owner = decoder._graphs_of or decoder
        key = next(key for key, held in owner._windows.items() if held is window)
        matchings = _PYMATCHING_WINDOWS.setdefault(decoder, {})
        if (key, decoder.correlations) not in matchings:
            dem = stim.DetectorErrorModel(decoder._cut_window(*key).dem)
            matchings[key, decoder.correlations] = pymatching.Matching.from_detector_error_model(
                dem, enable_correlations=decoder.correlations)
        matching = matchings[key, decoder.correlations]
        return matching.decode_batch(syndromes, enable_correlations=decoder.correlations).astype(bool)
