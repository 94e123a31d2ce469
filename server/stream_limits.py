"""What a DecodeStream may hold and for how long: admission counters (shots in flight, open streams,
streams per client), the idle limit on a stream's requests, and each stream's ledger of open
experiments with the memory, experiments and shots they reserved."""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading

from server.streams import StreamError

REMEMBERED_FAILURES = 4096  # ids of failed experiments a stream remembers, to say why their later rounds fail


class Admission:
    """A counter with a ceiling: shots in flight, or open streams."""

    def __init__(self, limit: int):
        self.limit = limit
        self.value = 0
        self._lock = threading.Lock()

    def take(self, amount: int = 1) -> bool:
        with self._lock:
            if self.value + amount > self.limit:
                return False
            self.value += amount
            return True

    def give(self, amount: int = 1) -> None:
        with self._lock:
            self.value -= amount


class PerClient:
    """Open streams per client connection (gRPC peer), each capped at ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def take(self, peer: str) -> bool:
        with self._lock:
            if self.counts[peer] >= self.limit:
                return False
            self.counts[peer] += 1
            return True

    def give(self, peer: str) -> None:
        with self._lock:
            self.counts[peer] -= 1
            if not self.counts[peer]:
                del self.counts[peer]


class StreamIdle(Exception):
    """The client sent nothing for longer than the stream idle limit."""


def idle_limited(requests, idle_s: float):
    """Yield the stream's requests, raising :class:`StreamIdle` when none arrives within ``idle_s``.

    A reader thread waits on gRPC's iterator; it ends with the call (gRPC ends the iterator)."""
    inbox: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def read():
        try:
            for request in requests:
                while not stop.is_set():
                    try:
                        inbox.put(("request", request), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            inbox.put(("end", None))
        except BaseException as exc:  # the call ended (cancelled, aborted) or a request was refused
            inbox.put(("error", exc))

    threading.Thread(target=read, name="stream-reader", daemon=True).start()
    try:
        while True:
            try:
                kind, value = inbox.get(timeout=idle_s)
            except queue.Empty:
                raise StreamIdle() from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


@dataclasses.dataclass
class OpenExperiments:
    """An experiment (or block) open in a stream, with what it reserved."""

    state: object
    model_name: str
    reserved_bytes: int


class StreamLedger:
    """What one DecodeStream holds: open experiments and blocks, their memory and shots (reserved
    when they open, released when they end: at most ``max_bytes`` and ``max_experiments``, shots
    counted in ``inflight``), and the ids that failed or ended (to name why later rounds fail)."""

    def __init__(self, inflight: Admission, max_bytes: int, max_experiments: int):
        self.inflight, self.max_bytes, self.max_experiments = inflight, max_bytes, max_experiments
        self.open: dict[tuple[str, str], OpenExperiments] = {}
        self.failed: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self.ended: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()  # answered
        self.bytes = 0
        self.experiments = 0

    def reserve(self, key: tuple[str, str], state, model_name: str) -> OpenExperiments:
        if self.experiments + state.experiments > self.max_experiments:
            raise StreamError(f"would open {self.experiments + state.experiments:,} experiments in this stream, over "
                              f"the server's limit of {self.max_experiments:,}; finish some first")
        if self.bytes + state.reserved_bytes > self.max_bytes:
            raise StreamError(f"needs {state.reserved_bytes:,} bytes of stream memory; this stream holds "
                              f"{self.bytes:,} of its {self.max_bytes:,}; finish some experiments first")
        if not self.inflight.take(state.experiments):
            raise StreamError(f"server busy: {self.inflight.value:,} shots in flight, the limit is "
                              f"{self.inflight.limit:,} (--max-inflight-shots); retry later")
        self.bytes += state.reserved_bytes
        self.experiments += state.experiments
        self.open[key] = OpenExperiments(state, model_name, state.reserved_bytes)
        return self.open[key]

    def close(self, key: tuple[str, str], failure: str | None = None) -> None:
        entry = self.open.pop(key, None)
        if entry is not None:
            self.bytes -= entry.reserved_bytes
            self.experiments -= entry.state.experiments
            self.inflight.give(entry.state.experiments)
        remembered = self.failed if failure is not None else self.ended if entry is not None else None
        if remembered is not None:
            remembered[key] = failure
            remembered.move_to_end(key)
            while len(remembered) > REMEMBERED_FAILURES:
                remembered.popitem(last=False)

    def close_all(self) -> None:
        for key in list(self.open):
            self.close(key)
