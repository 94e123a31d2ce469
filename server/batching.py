"""Micro-batching: concurrent requests for one model share a single decode call.

The worker never dies silently: every batch is guarded, requests whose callers are gone are
dropped, and a worker that stops anyway is restarted by the next request (``restarts`` counts
them). Work per batch is bounded: the batch is decoded in the decoder's chunks and abandoned
at the next chunk once no request in it is wanted any more (every deadline passed, every caller
gone). A request's ``release`` callback runs exactly once, when its shots leave the batcher
(answered, dropped or abandoned), so admission control counts the work still being done.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from decoder.errors import NqecError
from decoder.interface import DecodeResult, Decoder

log = logging.getLogger(__name__)
MAX_CHUNK_SHOTS = 8192  # work between two checks that a batch is still wanted (~30 ms of d=5 matching)


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch was decoded."""


class CallerGone(Exception):
    """Every caller of a batch left (cancelled or disconnected): its decoding stopped."""


class BatcherClosed(Exception):
    """The server is shutting down: queued requests are answered with this."""


@dataclasses.dataclass
class _Pending:
    events: np.ndarray  # bit-packed uint8 [shots, bytes]
    deadline: float | None  # time.monotonic() value, or None
    future: Future
    gone: Callable[[], bool] | None = None  # True once the caller has left
    release: Callable[[], None] | None = None  # runs once when the shots leave the batcher

    def wanted(self, now: float) -> bool:
        """Whether anybody still waits for this request's answer."""
        return ((self.deadline is None or now <= self.deadline) and not self.future.cancelled()
                and not (self.gone is not None and self.gone()))

    def settle(self, result=None, error: BaseException | None = None) -> None:
        """Answer the caller (unless it gave up) and release the shots; never raises."""
        if not self.future.done():
            try:
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.future.set_result(result)
            except Exception:  # InvalidStateError: cancelled between the check and the set
                pass
        release, self.release = self.release, None
        if release is not None:
            release()


@dataclasses.dataclass
class BatchOutcome:
    """One request's slice of a decoded batch and the batch's decode time."""

    result: DecodeResult
    decode_seconds: float
    batch_shots: int


class MicroBatcher:
    """One worker thread per model: it takes queued requests (up to ``max_batch`` shots; a single
    larger request is decoded alone; waiting at most ``max_wait_s`` for more after the first),
    decodes them as one batch and hands each request its rows. Expired, cancelled and abandoned
    requests are dropped before decoding and between chunks.

    When nothing is queued or being decoded (light load) and ``max_wait_s`` is 0, a request
    is decoded in the caller's thread: no hand-off to the worker, the lowest latency."""

    def __init__(self, decoder: Decoder, max_batch: int = 4096, max_wait_s: float = 0.0):
        self.decoder = decoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.restarts = 0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._carry: _Pending | None = None  # a request that did not fit the last batch: it opens the next
        self._busy = threading.Lock()  # held while a batch is being decoded
        self._closed = False
        self._lock = threading.Lock()  # orders close() against new requests, guards worker restarts
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
        with self._lock:
            if not self._thread.is_alive() and not self._closed:
                log.error("batch worker of %s had stopped; restarting it", self.decoder.name)
                self.restarts += 1
                self._thread = self._start_worker()

    def decode(self, events: np.ndarray, deadline: float | None = None, gone: Callable[[], bool] | None = None,
               release: Callable[[], None] | None = None) -> BatchOutcome:
        """Decode bit-packed events (alone, or batched with concurrent requests) and wait for them.

        ``gone()`` says whether the caller has left (its work then stops at the next chunk);
        ``release()`` runs exactly once, when the shots leave the batcher. Raises
        :class:`DeadlineExpired` when ``deadline`` (a ``time.monotonic()`` value) passes first,
        :class:`CallerGone`, :class:`BatcherClosed` when the server shuts down, and the
        decoder's exception if it fails."""
        pending = _Pending(events, deadline, Future(), gone, release)
        if self.max_wait_s == 0 and self._busy.acquire(blocking=False):
            try:
                if self._queue.empty() and self._carry is None and not self._closed:
                    try:
                        result, seconds = self._run(events, lambda: pending.wanted(time.monotonic()), deadline)
                        return BatchOutcome(result, seconds, len(events))
                    finally:
                        pending.settle()
            finally:
                self._busy.release()
        with self._lock:
            if self._closed:
                pending.settle(error=BatcherClosed())
                raise BatcherClosed()
            self._queue.put(pending)
        self.revive()
        try:
            return pending.future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            pending.future.cancel()  # still queued: the worker drops it; being decoded: it is no longer wanted
            raise DeadlineExpired() from None

    def replace_decoder(self, decoder: Decoder) -> None:
        """Decode with ``decoder`` from the next batch on (a batch under way finishes with the old one).

        It must take the same detection events and give the same observables; NqecError otherwise."""
        old = self.decoder
        if (decoder.num_detectors, decoder.num_observables) != (old.num_detectors, old.num_observables):
            raise NqecError(f"a replacement decoder must take {old.num_detectors} detectors and give "
                            f"{old.num_observables} observables, got {decoder.num_detectors} and {decoder.num_observables}")
        self.decoder = decoder

    def close(self) -> None:
        """Stop the worker; requests still queued are answered with :class:`BatcherClosed`."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # else the worker drains the queue after its current batch
            self._drain()

    def _drain(self) -> None:
        """Answer every queued request with BatcherClosed (once closed, by one thread at a time)."""
        carry, self._carry = self._carry, None
        if carry is not None:
            carry.settle(error=BatcherClosed())
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.settle(error=BatcherClosed())

    def _collect(self, first: _Pending) -> list[_Pending]:
        items, shots = [first], len(first.events)
        wait_until = time.monotonic() + self.max_wait_s
        while shots < self.max_batch:
            remaining = wait_until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # close(): the loop sees _closed next
                break
            if shots + len(item.events) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            shots += len(item.events)
        return items

    def _serve(self) -> None:
        while True:
            first, self._carry = self._carry, None
            if first is None:
                first = self._queue.get()
            if self._closed:
                if first is not None:
                    first.settle(error=BatcherClosed())
                self._drain()
                return
            if first is None:
                continue
            items = self._collect(first)
            try:
                with self._busy:
                    live = self._live(items)
                    if live:
                        self._decode(live)
            except BaseException as exc:  # never leave a caller waiting; die only on a non-Exception
                log.exception("batch worker of %s failed on a batch", self.decoder.name)
                error = exc if isinstance(exc, Exception) else RuntimeError(f"the batch worker stopped: {exc!r}")
                for item in items:
                    item.settle(error=error)
                if not isinstance(exc, Exception):
                    raise  # SystemExit and the like end the thread; revive() starts a new one

    @staticmethod
    def _live(items: list[_Pending]) -> list[_Pending]:
        """The requests still wanted (checked once the decoder is free); the others are answered now."""
        now = time.monotonic()
        live = []
        for item in items:
            if not item.future.set_running_or_notify_cancel():
                item.settle()  # the caller gave up (deadline passed while queued): release its shots
            elif item.deadline is not None and now > item.deadline:
                item.settle(error=DeadlineExpired())
            elif item.gone is not None and item.gone():
                item.settle(error=CallerGone())
            else:
                live.append(item)
        return live

    def _run(self, events: np.ndarray, wanted: Callable[[], bool], deadline: float | None
             ) -> tuple[DecodeResult, float]:
        """Decode in the decoder's chunks; stop before a chunk once nobody wants the answer."""
        start = time.perf_counter()
        decoder = self.decoder  # one decoder for the whole batch, whatever replace_decoder does meanwhile
        chunk = min(decoder.chunk_shots, MAX_CHUNK_SHOTS)
        parts = []
        for offset in range(0, max(len(events), 1), chunk):
            if not wanted():
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExpired()
                raise CallerGone()
            parts.append(decoder.decode_batch_with_info(events[offset: offset + chunk]))
        return DecodeResult.concatenate(parts), time.perf_counter() - start

    def _decode(self, items: list[_Pending]) -> None:
        batch = items[0].events if len(items) == 1 else np.concatenate([item.events for item in items])
        deadlines = [item.deadline for item in items]
        latest = None if None in deadlines else max(deadlines)
        try:
            result, seconds = self._run(batch, lambda: any(item.wanted(time.monotonic()) for item in items), latest)
        except Exception as exc:  # a failing model or an abandoned batch must not kill the worker
            for item in items:
                item.settle(error=exc)
            return
        offset = 0
        for item in items:
            rows = slice(offset, offset + len(item.events))
            offset = rows.stop
            item.settle(BatchOutcome(result.rows(rows), seconds, len(batch)))
