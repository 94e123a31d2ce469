"""A small client for the decoding service: fails over between replicas and splits large batches.

Example:
    >>> client = DecoderClient(["127.0.0.1:50051", "127.0.0.1:50052"])  # doctest: +SKIP
    >>> flips, stages, seconds = client.decode("matching-d5-r5-p0.003-z-depolarizing", packed_events)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from decoder.events import unpack_bits
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc

DOWN_FOR_S = 5.0  # a target that refused a call is skipped this long
DEFAULT_MAX_SHOTS = 1 << 16  # request size when the server does not say its limit


class DecoderClient:
    """Round-robins calls over ``targets`` ("host:port"); ``token`` adds the bearer metadata.

    A call that finds its target UNAVAILABLE (down, unreachable, shutting down) is retried on
    the next target, and the failed target is skipped for :data:`DOWN_FOR_S` seconds; the
    error reaches the caller only when every target failed."""

    def __init__(self, targets: list[str], token: str | None = None, root_certificates: bytes | None = None):
        if not targets:
            raise ValueError("at least one target host:port is needed")
        self.targets = list(targets)
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates)
            self.channels = [grpc.secure_channel(t, credentials) for t in targets]
        else:
            self.channels = [grpc.insecure_channel(t) for t in targets]
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

    def call(self, method: str, request, **kwargs):
        """Call unary ``method`` on a live target, failing over on UNAVAILABLE."""
        error = None
        for index in self._order():
            try:
                return getattr(self.stubs[index], method)(request, metadata=self.metadata, **kwargs)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                self._down_until[index] = time.monotonic() + DOWN_FOR_S
                error = exc
        raise error

    def stub(self) -> pb2_grpc.DecoderStub:
        """The stub of the next target believed up (for streaming calls)."""
        return self.stubs[self._order()[0]]

    def model_info(self, model: str) -> pb2.ModelInfo:
        if model not in self._info:
            self._info[model] = self.call("GetModelInfo", pb2.GetModelInfoRequest(model=model))
        return self._info[model]

    def list_models(self) -> list[pb2.ModelInfo]:
        return list(self.call("ListModels", pb2.ListModelsRequest()).models)

    def decode(self, model: str, packed_events: np.ndarray, timeout: float | None = None):
        """Bit-packed ``uint8 [shots, bytes]`` -> (``bool [shots, O]`` flips, ``uint8 [shots]`` stages,
        server seconds). Batches over the server's per-request limit go as several requests."""
        packed_events = np.ascontiguousarray(packed_events, dtype=np.uint8)
        info = self.model_info(model)
        limit = info.max_shots_per_request or DEFAULT_MAX_SHOTS
        flips, stages, seconds = [], [], 0.0
        for start in range(0, len(packed_events), limit):
            part = packed_events[start: start + limit]
            request = pb2.DecodeRequest(model=model, detection_events=part.tobytes(), num_shots=len(part))
            response = self.call("Decode", request, timeout=timeout)
            packed = np.frombuffer(response.observable_flips, np.uint8).reshape(response.num_shots, -1)
            flips.append(unpack_bits(packed, info.num_observables))
            stages.append(np.frombuffer(response.stages, np.uint8))
            seconds += response.decode_seconds
        return np.concatenate(flips), np.concatenate(stages), seconds

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
