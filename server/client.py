"""A small client for the decoding service, with client-side round-robin over replicas.

Example:
    >>> client = DecoderClient(["127.0.0.1:50051"])                     # doctest: +SKIP
    >>> flips, stages, seconds = client.decode("matching-d5-r5-p0.003-z-depolarizing", packed_events)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import threading

import grpc
import numpy as np

from decoder.events import unpack_bits
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc


class DecoderClient:
    """Round-robins calls over ``targets`` ("host:port"); ``token`` adds the bearer metadata."""

    def __init__(self, targets: list[str], token: str | None = None, root_certificates: bytes | None = None):
        if not targets:
            raise ValueError("at least one target host:port is needed")
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates)
            self.channels = [grpc.secure_channel(t, credentials) for t in targets]
        else:
            self.channels = [grpc.insecure_channel(t) for t in targets]
        self.stubs = [pb2_grpc.DecoderStub(c) for c in self.channels]
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._next = itertools.cycle(range(len(self.stubs)))
        self._lock = threading.Lock()
        self._info: dict[str, pb2.ModelInfo] = {}

    def stub(self) -> pb2_grpc.DecoderStub:
        with self._lock:
            return self.stubs[next(self._next)]

    def model_info(self, model: str) -> pb2.ModelInfo:
        if model not in self._info:
            self._info[model] = self.stub().GetModelInfo(pb2.GetModelInfoRequest(model=model), metadata=self.metadata)
        return self._info[model]

    def list_models(self) -> list[pb2.ModelInfo]:
        return list(self.stub().ListModels(pb2.ListModelsRequest(), metadata=self.metadata).models)

    def decode(self, model: str, packed_events: np.ndarray, timeout: float | None = None):
        """Bit-packed ``uint8 [shots, bytes]`` -> (``bool [shots, O]`` flips, ``uint8 [shots]`` stages, server seconds)."""
        packed_events = np.ascontiguousarray(packed_events, dtype=np.uint8)
        request = pb2.DecodeRequest(model=model, detection_events=packed_events.tobytes(), num_shots=len(packed_events))
        response = self.stub().Decode(request, timeout=timeout, metadata=self.metadata)
        num_observables = self.model_info(model).num_observables
        packed = np.frombuffer(response.observable_flips, np.uint8).reshape(response.num_shots, -1)
        return unpack_bits(packed, num_observables), np.frombuffer(response.stages, np.uint8), response.decode_seconds

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
