"""Prometheus metrics of one server (its own registry, so several servers can share a process)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.5, 1.0, 5.0)


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
    """One model's metric children, resolved once (``labels()`` costs a lock and a lookup per call)."""

    decode_seconds: object
    unary_seconds: object
    shots: object
    fallbacks: object


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram("nqec_request_seconds", "Server-side RPC latency", ["method", "model"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decode_seconds = Histogram("nqec_decode_seconds", "Time per decoded batch", ["model"],
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shots = Counter("nqec_shots", "Shots decoded", ["model"], registry=self.registry)
        self.fallbacks = Counter("nqec_matching_answers", "Shots answered by matching in a neural pipeline",
                                 ["model"], registry=self.registry)
        self.errors = Counter("nqec_errors", "Failed RPCs by status code", ["method", "code"], registry=self.registry)
        self.worker_restarts = Counter("nqec_worker_restarts", "Batch workers found stopped and restarted", ["model"],
                                       registry=self.registry)

    def for_model(self, model: str) -> ModelMetrics:
        return ModelMetrics(self.decode_seconds.labels(model), self.request_seconds.labels("Decode", model),
                            self.shots.labels(model), self.fallbacks.labels(model))

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Expose ``/metrics`` over HTTP on ``port``; returns the HTTP server."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server
