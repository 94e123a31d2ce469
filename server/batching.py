"""Micro-batching: concurrent requests for one model share a single decode call.

The worker never dies silently: every batch is guarded, requests whose callers are gone are
dropped, and a worker that stops anyway is restarted by the next request (``restarts`` counts
them). Work per batch is bounded: the batch is decoded in the decoder's chunks and abandoned
once every request in it is past its deadline.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from decoder.interface import DecodeResult, Decoder

log = logging.getLogger(__name__)


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch was decoded."""


class BatcherClosed(Exception):
    """The server is shutting down: queued requests are answered with this."""


@dataclasses.dataclass
class _Pending:
    events: np.ndarray  # bit-packed uint8 [shots, bytes]
    deadline: float | None  # time.monotonic() value, or None
    future: Future


@dataclasses.dataclass
class BatchOutcome:
    """One request's slice of a decoded batch and the batch's decode time."""

    result: DecodeResult
    decode_seconds: float
    batch_shots: int


def _settle(future: Future, result=None, error: BaseException | None = None) -> None:
    """Answer a future unless its caller already gave up on it (cancelled): never raises."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: cancelled between the check and the set
        pass


class MicroBatcher:
    """One worker thread per model: it takes every queued request (up to ``max_batch`` shots,
    waiting at most ``max_wait_s`` for more after the first), decodes them as one batch and
    hands each request its rows. Expired and cancelled requests are dropped before decoding.

    When nothing is queued or being decoded (light load) and ``max_wait_s`` is 0, a request
    is decoded in the caller's thread: no hand-off to the worker, the lowest latency."""

    def __init__(self, decoder: Decoder, max_batch: int = 4096, max_wait_s: float = 0.0):
        self.decoder = decoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.restarts = 0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._busy = threading.Lock()  # held while a batch is being decoded
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread = self._start_worker()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running (it is restarted on the next request if not)."""
        return self._thread.is_alive()

    def _start_worker(self) -> threading.Thread:
        thread = threading.Thread(target=self._serve, name=f"batcher-{self.decoder.name}", daemon=True)
        thread.start()
        return thread

    def revive(self) -> None:
        """Restart the worker thread if it stopped (every queued request calls this first)."""
        if self._thread.is_alive() or self._closed:
            return
        with self._start_lock:
            if not self._thread.is_alive():
                log.error("batch worker of %s had stopped; restarting it", self.decoder.name)
                self.restarts += 1
                self._thread = self._start_worker()

    def decode(self, events: np.ndarray, deadline: float | None = None) -> BatchOutcome:
        """Decode bit-packed events (alone, or batched with concurrent requests) and wait for them.

        Raises :class:`DeadlineExpired` when ``deadline`` (a ``time.monotonic()`` value) passes
        first, :class:`BatcherClosed` when the server shuts down, and the decoder's exception if it fails."""
        if self._closed:
            raise BatcherClosed()
        if self.max_wait_s == 0 and self._busy.acquire(blocking=False):
            try:
                if self._queue.empty():
                    result, seconds = self._run(events, deadline)
                    return BatchOutcome(result, seconds, len(events))
            finally:
                self._busy.release()
        self.revive()
        future: Future = Future()
        self._queue.put(_Pending(events, deadline, future))
        try:
            return future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise DeadlineExpired() from None

    def close(self) -> None:
        """Stop the worker; requests still queued are answered with :class:`BatcherClosed`."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _settle(item.future, error=BatcherClosed())

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        items, shots = [first], len(first.events)
        wait_until = time.monotonic() + self.max_wait_s
        while shots < self.max_batch:
            remaining = wait_until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
            shots += len(item.events)
        return items, False

    def _serve(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                return
            items, closing = self._collect(first)
            try:
                live = self._live(items)
                if live:
                    with self._busy:
                        self._decode(live)
            except BaseException as exc:  # never leave a caller waiting; die only on a non-Exception
                log.exception("batch worker of %s failed on a batch", self.decoder.name)
                error = exc if isinstance(exc, Exception) else RuntimeError(f"the batch worker stopped: {exc!r}")
                for item in items:
                    _settle(item.future, error=error)
                if not isinstance(exc, Exception):
                    raise  # SystemExit and the like end the thread; revive() starts a new one

    @staticmethod
    def _live(items: list[_Pending]) -> list[_Pending]:
        """The requests still wanted: not cancelled by their callers, not past their deadlines."""
        now = time.monotonic()
        live = []
        for item in items:
            if not item.future.set_running_or_notify_cancel():
                continue  # the caller gave up (deadline passed while queued)
            if item.deadline is not None and now > item.deadline:
                _settle(item.future, error=DeadlineExpired())
            else:
                live.append(item)
        return live

    def _run(self, events: np.ndarray, deadline: float | None) -> tuple[DecodeResult, float]:
        """Decode in the decoder's chunks; stop with DeadlineExpired once ``deadline`` has passed."""
        start = time.perf_counter()
        chunk = self.decoder.chunk_shots
        parts = []
        for offset in range(0, max(len(events), 1), chunk):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExpired()
            parts.append(self.decoder.decode_batch_with_info(events[offset: offset + chunk]))
        return DecodeResult.concatenate(parts), time.perf_counter() - start

    def _decode(self, items: list[_Pending]) -> None:
        batch = items[0].events if len(items) == 1 else np.concatenate([item.events for item in items])
        deadlines = [item.deadline for item in items]
        latest = None if None in deadlines else max(deadlines)
        try:
            result, seconds = self._run(batch, latest)
        except Exception as exc:  # a failing model or an abandoned batch must not kill the worker
            for item in items:
                _settle(item.future, error=exc)
            return
        offset = 0
        for item in items:
            rows = slice(offset, offset + len(item.events))
            offset = rows.stop
            _settle(item.future, BatchOutcome(result.rows(rows), seconds, len(batch)))
