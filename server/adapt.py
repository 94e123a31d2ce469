"""Learn while serving (``nqec serve --adapt``): matching and guided-matching models follow the noise
of the shots they decode.

After every successful decode the service hands the request's bit-packed detection events to
:meth:`AdaptiveModel.observe`: a put on a queue bounded in shots (when it is full the shots are
dropped and counted; nothing is computed on the caller's thread). One low-priority thread per model
adds them to an :class:`EdgeAccumulator` that forgets exponentially (the estimate stands on about
``shots`` recent shots) and, every ``every`` new shots, estimates the edges, builds a decoder from
the reweighted DEM (the decoder's ``with_dem``: matching of that DEM, or guided matching with that
DEM as its prior, the network shared) and hands it to the model's batcher (:meth:`MicroBatcher.replace_decoder`): the
next batch decodes with it, no batch sees two decoders, decoding never waits. After each step the
thread rests 9x the CPU time the step took, so it holds at most ~10% of a core and of the GIL
(a d=9 re-estimate takes ~0.5 s; adding a d=5 shot ~0.5 us, a quarter of decoding it): traffic
beyond that fills the queue and is dropped, and the estimate samples it. The current estimate's
largest departures from the nominal DEM are published in the model's metrics (``GetModelInfo``'s
``metrics_json``, key ``adapt``) and in Prometheus. A failure in the thread is logged and pauses
adaptation; the model keeps serving with its last decoder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time

import numpy as np
from prometheus_client import Counter, Gauge

from decoder.errors import NqecError
from decoder.noise_estimate import MIN_PROBABILITY, MIN_SHOTS, EdgeAccumulator, EdgeEstimate, reweighted_dem
from server.batching import MicroBatcher
from server.models import ServedModel

log = logging.getLogger(__name__)
TOP_DEPARTURES = 10  # edges listed in GetModelInfo
MAX_QUEUED_SHOTS = 1 << 17  # shots waiting for the accumulator; more are dropped
MAX_UPDATE_SHOTS = 1 << 14  # queued shots the thread adds to the sums in one step
MAX_BUSY_FRACTION = 0.1  # the thread's work (CPU time) is at most this share of its time


class AdaptMetrics:
    """Prometheus metrics of every adapting model of one server (on its registry)."""

    def __init__(self, registry) -> None:
        self.shots = Counter("nqec_adapt_shots", "Decoded shots added to the edge estimate", ["model"],
                             registry=registry)
        self.dropped = Counter("nqec_adapt_dropped_shots", "Decoded shots not added (the estimate's queue was full)",
                               ["model"], registry=registry)
        self.updates = Counter("nqec_adapt_updates", "Decoders rebuilt from a new edge estimate and swapped in",
                               ["model"], registry=registry)
        self.largest_ratio = Gauge("nqec_adapt_largest_ratio", "Largest estimated / nominal edge probability",
                                   ["model"], registry=registry)


def adapts(decoder) -> bool:
    """Whether ``decoder`` can follow a re-estimated DEM: it decodes from a ``dem`` and builds its
    twin on another one with ``with_dem`` (matching in either mode, guided matching)."""
    return callable(getattr(decoder, "with_dem", None)) and hasattr(decoder, "dem")


class AdaptiveModel:
    """A served model's running edge estimate, its thread and its decoder swaps (see :func:`adapts`).

    ``dem``: the DEM the model decodes with now (None until the first swap); ``summary()``: what
    ``GetModelInfo`` shows.

    Example:
        >>> from decoder import CodeSpec, MatchingDecoder
        >>> spec = CodeSpec(3, 3, 0.003)
        >>> model = ServedModel("m", "matching", "matching", spec, MatchingDecoder.from_spec(spec), [], {})
        >>> batcher = MicroBatcher(model.decoder)
        >>> adapter = AdaptiveModel(model, batcher, shots=5000, every=2000)
        >>> adapter.observe(spec.circuit().compile_detector_sampler(seed=1).sample(2000, bit_packed=True))
        >>> import time
        >>> for _ in range(1000):  # the thread adds them and swaps in a decoder on the estimate
        ...     if model.metrics["adapt"]["updates"]:
        ...         break
        ...     time.sleep(0.01)
        >>> adapter.updates, batcher.decoder.dem is adapter.dem, model.metrics["adapt"]["shots_seen"]
        (1, True, 2000)
        >>> adapter.close()
        >>> batcher.close()
    """

    def __init__(self, model: ServedModel, batcher: MicroBatcher, *, shots: int, every: int,
                 metrics: AdaptMetrics | None = None):
        if not adapts(batcher.decoder):
            raise NqecError(f"model {model.name!r} decodes with {batcher.decoder.name}; only matching and "
                            f"guided-matching models adapt")
        self.model, self.batcher, self.every = model, batcher, every
        self.static = batcher.decoder  # every swapped-in decoder is its twin on a new DEM
        self.nominal = batcher.decoder.dem
        self.accumulator = EdgeAccumulator(self.nominal, half_life=shots * math.log(2))  # about `shots` effective
        self.dem = None
        self.updates = self.shots_seen = self.shots_dropped = self.shots_since_update = 0
        self.error: str | None = None
        self._top: list = []
        self._base_metrics = model.metrics
        self._queued = 0
        self._closing = threading.Event()  # set by close(): ends the rest and the thread
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._metrics = None if metrics is None else {name: getattr(metrics, name).labels(model.name)
                                                      for name in ("shots", "dropped", "updates", "largest_ratio")}
        self._publish()
        self._thread = threading.Thread(target=self._run, name=f"adapt-{model.name}", daemon=True)
        self._thread.start()

    def observe(self, events: np.ndarray) -> None:
        """Queue decoded bit-packed events ``uint8 [shots, bytes]`` for the estimate (dropped when full)."""
        with self._lock:
            if self.error is not None:
                return
            full = self._queued + len(events) > MAX_QUEUED_SHOTS
            if full:
                self.shots_dropped += len(events)
            else:
                self._queued += len(events)
        if not full:
            self._inbox.put(events)
        elif self._metrics is not None:
            self._metrics["dropped"].inc(len(events))

    def close(self) -> None:
        """Stop the thread after the step under way (the model keeps its current decoder)."""
        self._closing.set()
        self._inbox.put(None)
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        """Shots seen and dropped, decoder swaps, shots seen since the last one, the effective shots
        behind the estimate and its largest departures from nominal, ``[detectors, nominal p,
        estimated p]``, largest first."""
        summary = {"shots_seen": self.shots_seen, "shots_dropped": self.shots_dropped, "updates": self.updates,
                   "shots_since_update": self.shots_since_update, "effective_shots": round(self.accumulator.shots),
                   "every": self.every, "top_departures": self._top}
        if self.error is not None:
            summary["paused"] = self.error
        return summary

    def _publish(self) -> None:
        """Replace the model's metrics dict (one assignment: readers see the old or the new one)."""
        self.model.metrics = {**self._base_metrics, "adapt": self.summary()}

    def _take(self) -> list | None:
        """Block for queued events, then take what else is queued, up to MAX_UPDATE_SHOTS; None once
        ``close()`` was called (what is still queued is let go)."""
        parts = [self._inbox.get()]
        shots = 0 if parts[0] is None else len(parts[0])
        while parts[-1] is not None and shots < MAX_UPDATE_SHOTS:
            try:
                parts.append(self._inbox.get_nowait())
            except queue.Empty:
                break
            shots += 0 if parts[-1] is None else len(parts[-1])
        with self._lock:
            self._queued -= shots
        return None if self._closing.is_set() else parts

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a nice value per thread
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            while (parts := self._take()) is not None:
                began = time.thread_time()  # CPU time: waiting for the GIL is not work
                events = parts[0] if len(parts) == 1 else np.concatenate(parts)
                self.accumulator.update(events)
                self.shots_seen += len(events)
                self.shots_since_update += len(events)
                if self._metrics is not None:
                    self._metrics["shots"].inc(len(events))
                if self.shots_since_update >= self.every and self.accumulator.shots >= MIN_SHOTS:
                    self._swap(self.accumulator.estimate(stderr=False))
                    self.shots_since_update = 0
                self._publish()
                self._closing.wait((time.thread_time() - began) * (1 / MAX_BUSY_FRACTION - 1))  # the queue fills
        except Exception as exc:  # never take the model down: it keeps its last decoder
            log.exception("adaptation of %s failed; it is paused, the model keeps serving", self.model.name)
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
            self._publish()
            with contextlib.suppress(queue.Empty):
                while True:  # let go of what was queued: nothing will read it
                    self._inbox.get_nowait()

    def _swap(self, estimate: EdgeEstimate) -> None:
        """Build the decoder's twin on the reweighted DEM (off the hot path) and hand it to the batcher."""
        dem = reweighted_dem(self.nominal, estimate)
        self.batcher.replace_decoder(self.static.with_dem(dem))
        self.dem = dem
        self.updates += 1
        ratio = estimate.p / np.maximum(estimate.nominal, MIN_PROBABILITY)
        order = np.argsort(-np.abs(np.log(ratio)), kind="stable")[:TOP_DEPARTURES]
        self._top = [[[int(d) for d in estimate.detectors[e] if d >= 0], float(estimate.nominal[e]),
                      float(estimate.p[e])] for e in order]
        if self._metrics is not None:
            self._metrics["updates"].inc()
            self._metrics["largest_ratio"].set(float(ratio.max()))


def start_adapters(models: dict[str, ServedModel], batchers: dict[str, MicroBatcher], registry, *,
                   shots: int, every: int) -> dict[str, AdaptiveModel]:
    """An :class:`AdaptiveModel` for every served model whose batcher's decoder :func:`adapts` (one
    whose DEM cannot be estimated is served as it is, with a log line)."""
    metrics = AdaptMetrics(registry)
    adapters = {}
    for name, batcher in batchers.items():
        if adapts(batcher.decoder):
            try:
                adapters[name] = AdaptiveModel(models[name], batcher, shots=shots, every=every, metrics=metrics)
            except NqecError as exc:  # e.g. a user's circuit whose DEM has no matching graph to estimate
                log.warning("model %s is served without --adapt: %s", name, exc)
    return adapters
