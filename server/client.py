"""A small client for the decoding service: fails over between replicas, retries refused calls
and splits large batches.

Example:
    >>> client = DecoderClient(["127.0.0.1:50051", "127.0.0.1:50052"])  # doctest: +SKIP
    >>> flips, stages, seconds = client.decode("matching-d5-r5-p0.003-z-depolarizing", packed_events)  # doctest: +SKIP

Channel options (:data:`CHANNEL_OPTIONS`; gRPC's default in brackets):

- ``grpc.initial_reconnect_backoff_ms`` 100 [1000], ``grpc.max_reconnect_backoff_ms`` 1000
  [120000]: a channel whose server went away tries to reconnect 0.1 s later and then at least
  every second, so the first call after a server restart succeeds within ~1 s of the server
  serving again (with the defaults the tries come 1, 1.6, 2.6, 4.1 s ... apart: seconds).
- ``grpc.min_reconnect_backoff_ms`` 2000 [20000]: also the time one connection attempt (TCP and
  the HTTP/2 handshake) may take. A frozen server accepts TCP and never answers; a call without
  a deadline used to wait 20 s for it before failing over.
- ``grpc.use_local_subchannel_pool`` 1 [0]: each client has its own connections; a new client
  does not inherit another's connection to a replica that has since frozen.
- No keepalive: a call in flight to a replica that froze after connecting is not saved by it
  (measured), and pings more often than every 5 min get the connection closed by the server
  (``too_many_pings``). Give calls a deadline: that is what moves them to another replica.
- ``grpc.service_config``: a Decode refused with RESOURCE_EXHAUSTED (the server's
  ``--max-inflight-shots``) is retried by gRPC itself: up to :data:`RETRY_ATTEMPTS` attempts,
  jittered exponential backoff, within the call's deadline. Not DecodeStream: gRPC's replay of
  the requests a refused stream had taken delivered rounds out of order (3 of 200 streams);
  :meth:`DecoderClient.stream` opens a refused stream again with fresh requests instead.
- ``wait_for_ready`` stays False: a call to a target that is down fails at once (UNAVAILABLE)
  and goes to the next target.
"""

from __future__ import annotations

import json
import random
import threading
import time

import grpc
import numpy as np

from decoder.events import unpack_bits
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc

DOWN_FOR_S = 5.0  # a target that failed a call is skipped this long
DEFAULT_MAX_SHOTS = 1 << 16  # request size when the server does not say its limit
FAILOVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
RETRY_ATTEMPTS = 5  # gRPC's cap
STREAM_ATTEMPTS = 12  # openings of a stream the server keeps refusing
STREAM_BACKOFF_S = (0.05, 1.0)  # first and largest bound of the jittered wait between openings
SERVICE = pb2.DESCRIPTOR.services_by_name["Decoder"].full_name
SERVICE_CONFIG = {"methodConfig": [{
    "name": [{"service": SERVICE, "method": "Decode"}],
    "retryPolicy": {"maxAttempts": RETRY_ATTEMPTS, "initialBackoff": "0.1s", "maxBackoff": "2s",
                    "backoffMultiplier": 3, "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}]}
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.min_reconnect_backoff_ms", 2000), ("grpc.use_local_subchannel_pool", 1),
                   ("grpc.enable_retries", 1),
                   ("grpc.service_config", json.dumps(SERVICE_CONFIG)))


class DecoderClient:
    """Round-robins calls over ``targets`` ("host:port"); ``token`` adds the bearer metadata.

    A unary call that finds its target UNAVAILABLE (down, unreachable, shutting down) or that
    gets no answer within its share of the caller's deadline (DEADLINE_EXCEEDED: a frozen or
    overloaded replica) is retried on the next target, and the failed target is skipped for
    :data:`DOWN_FOR_S` seconds; the error reaches the caller only when every target failed or
    the deadline passed. With a deadline, each of the ``n`` targets still to try gets 1/n of
    the time left, so a frozen target costs a share, not the whole deadline."""

    def __init__(self, targets: list[str], token: str | None = None, root_certificates: bytes | None = None):
        if not targets:
            raise ValueError("at least one target host:port is needed")
        self.targets = list(targets)
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates)
            self.channels = [grpc.secure_channel(t, credentials, options=CHANNEL_OPTIONS) for t in targets]
        else:
            self.channels = [grpc.insecure_channel(t, options=CHANNEL_OPTIONS) for t in targets]
        self.stubs = [pb2_grpc.DecoderStub(c) for c in self.channels]
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._lock = threading.Lock()
        self._next = 0
        self._down_until = [0.0] * len(targets)
        self._info: dict[str, pb2.ModelInfo] = {}

    def _order(self) -> list[int]:
        """Target indices to try: round-robin start, targets believed down last."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.stubs)
        order = [(start + i) % len(self.stubs) for i in range(len(self.stubs))]
        now = time.monotonic()
        return sorted(order, key=lambda i: self._down_until[i] > now)

    def is_down(self, target: str) -> bool:
        """Whether ``target`` failed a call within the last :data:`DOWN_FOR_S` seconds."""
        return self._down_until[self.targets.index(target)] > time.monotonic()

    def call(self, method: str, request, timeout: float | None = None):
        """Call unary ``method`` on a live target within ``timeout`` seconds, failing over on
        UNAVAILABLE and on a target's share of the deadline running out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        order = self._order()
        for tried, index in enumerate(order):
            share = None if deadline is None else max(0.0, deadline - time.monotonic()) / (len(order) - tried)
            try:
                return getattr(self.stubs[index], method)(request, timeout=share, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() not in FAILOVER_CODES:
                    raise
                self._down_until[index] = time.monotonic() + DOWN_FOR_S
                if tried == len(order) - 1:
                    raise

    def stub(self) -> pb2_grpc.DecoderStub:
        """The stub of the next target believed up (for streaming calls)."""
        return self.stubs[self._order()[0]]

    def stream(self, requests, timeout: float | None = None):
        """``DecodeStream`` on the next target believed up; yields the responses.

        ``requests()`` returns the request iterator of one opening. A stream the server refuses
        (RESOURCE_EXHAUSTED: ``--max-streams`` are open; nothing was read) is opened again with
        a fresh ``requests()`` after a jittered wait that doubles up to 1 s, at most
        :data:`STREAM_ATTEMPTS` times and within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bound = STREAM_BACKOFF_S[0]
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            responses = self.stub().DecodeStream(requests(), timeout=left, metadata=self.metadata)
            try:
                first = next(responses)
            except StopIteration:
                return
            except grpc.RpcError as exc:
                wait = random.uniform(0, bound)
                if (exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == STREAM_ATTEMPTS
                        or (deadline is not None and time.monotonic() + wait >= deadline)):
                    raise
                time.sleep(wait)
                bound = min(2 * bound, STREAM_BACKOFF_S[1])
                continue
            yield first
            yield from responses
            return

    def model_info(self, model: str, timeout: float | None = None) -> pb2.ModelInfo:
        if model not in self._info:
            self._info[model] = self.call("GetModelInfo", pb2.GetModelInfoRequest(model=model), timeout)
        return self._info[model]

    def list_models(self, timeout: float | None = None) -> list[pb2.ModelInfo]:
        return list(self.call("ListModels", pb2.ListModelsRequest(), timeout).models)

    def decode(self, model: str, packed_events: np.ndarray, timeout: float | None = None):
        """Bit-packed ``uint8 [shots, bytes]`` -> (``bool [shots, O]`` flips, ``uint8 [shots]`` stages,
        server seconds), all within ``timeout`` seconds. Batches over the server's per-request
        limit go as several requests."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        packed_events = np.ascontiguousarray(packed_events, dtype=np.uint8)
        info = self.model_info(model, left())
        limit = info.max_shots_per_request or DEFAULT_MAX_SHOTS
        flips, stages, seconds = [], [], 0.0
        for start in range(0, len(packed_events), limit):
            part = packed_events[start: start + limit]
            request = pb2.DecodeRequest(model=model, detection_events=part.tobytes(), num_shots=len(part))
            response = self.call("Decode", request, left())
            packed = np.frombuffer(response.observable_flips, np.uint8).reshape(response.num_shots, -1)
            flips.append(unpack_bits(packed, info.num_observables))
            stages.append(np.frombuffer(response.stages, np.uint8))
            seconds += response.decode_seconds
        return np.concatenate(flips), np.concatenate(stages), seconds

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def __enter__(self) -> DecoderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
