"""Micro-batching: concurrent requests for one model share a single decode call."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from decoder.interface import DecodeResult, Decoder


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch was decoded."""


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


class MicroBatcher:
    """One worker thread per model: it takes every queued request (up to ``max_batch`` shots,
    waiting at most ``max_wait_s`` for more after the first), decodes them as one batch and
    hands each request its rows. Expired requests are dropped before decoding.

    When nothing is queued or being decoded (light load) and ``max_wait_s`` is 0, a request
    is decoded in the caller's thread: no hand-off to the worker, the lowest latency."""

    def __init__(self, decoder: Decoder, max_batch: int = 4096, max_wait_s: float = 0.0):
        self.decoder = decoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._busy = threading.Lock()  # held while a batch is being decoded
        self._thread = threading.Thread(target=self._serve, name=f"batcher-{decoder.name}", daemon=True)
        self._thread.start()

    def decode(self, events: np.ndarray, deadline: float | None = None) -> BatchOutcome:
        """Decode bit-packed events (alone, or batched with concurrent requests) and wait for them.

        Raises :class:`DeadlineExpired` when ``deadline`` (a ``time.monotonic()`` value) passes
        first, and the decoder's exception if it fails."""
        if self.max_wait_s == 0 and self._busy.acquire(blocking=False):
            try:
                if self._queue.empty():
                    result, seconds = self._run(events)
                    return BatchOutcome(result, seconds, len(events))
            finally:
                self._busy.release()
        future: Future = Future()
        self._queue.put(_Pending(events, deadline, future))
        try:
            return future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise DeadlineExpired() from None

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

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
            now = time.monotonic()
            live = []
            for item in items:
                if item.deadline is not None and now > item.deadline:
                    item.future.set_exception(DeadlineExpired())
                elif item.future.set_running_or_notify_cancel():
                    live.append(item)
            if live:
                with self._busy:
                    self._decode(live)

    def _run(self, events: np.ndarray) -> tuple[DecodeResult, float]:
        start = time.perf_counter()
        result = self.decoder.decode_batch_with_info(events)
        return result, time.perf_counter() - start

    def _decode(self, items: list[_Pending]) -> None:
        batch = items[0].events if len(items) == 1 else np.concatenate([item.events for item in items])
        try:
            result, seconds = self._run(batch)
        except Exception as exc:  # a failing model must not kill the worker
            for item in items:
                item.future.set_exception(exc)
            return
        offset = 0
        for item in items:
            rows = slice(offset, offset + len(item.events))
            offset = rows.stop
            item.future.set_result(BatchOutcome(result.rows(rows), seconds, len(batch)))
