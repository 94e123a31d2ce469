"""Assemble and run the gRPC server: decoder service, health, reflection, auth, TLS, metrics."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.metrics import ServerMetrics
from server.models import ServedModel, load_models
from server.service import DecoderService

log = logging.getLogger(__name__)
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Decoder"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # reachable without the token


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0: pick a free port
    models_dir: str | None = None
    max_batch: int = 4096
    max_wait_us: int = 0
    max_shots_per_request: int = 1 << 16
    max_message_bytes: int = 16 << 20
    workers: int = 32
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port


class TokenAuth(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` metadata (health and reflection stay open)."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}"

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer <token>' metadata")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        if method.startswith(OPEN_METHODS) or metadata.get("authorization") == self.expected:
            return continuation(handler_call_details)
        return self._deny_stream if method.endswith("DecodeStream") else self._deny_unary


class RunningServer:
    """A started server; ``stop()`` finishes in-flight calls before returning."""

    def __init__(self, server: grpc.Server, service: DecoderService, health_servicer, port: int,
                 metrics: ServerMetrics, metrics_http=None):
        self.server, self.service, self.health, self.port = server, service, health_servicer, port
        self.metrics, self.metrics_http = metrics, metrics_http

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.service.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()


def start_server(config: ServerConfig, models: dict[str, ServedModel] | None = None) -> RunningServer:
    """Load models (unless given), start serving, and return the running server."""
    models = models if models is not None else load_models(config.models_dir)
    metrics = ServerMetrics()
    interceptors = [TokenAuth(config.token)] if config.token else []
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers), interceptors=interceptors,
                         options=options)
    service = DecoderService(models, metrics, config.max_batch, config.max_wait_us / 1e6, config.max_shots_per_request)
    pb2_grpc.add_DecoderServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        credentials = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    server.start()
    metrics_http = metrics.serve(config.metrics_port, config.host) if config.metrics_port is not None else None
    log.info("nqec serving %d models on %s:%d", len(models), config.host, port)
    return RunningServer(server, service, health_servicer, port, metrics, metrics_http)


def serve_forever(config: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    running = start_server(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"nqec serve: {len(running.service.models)} models on {config.host}:{running.port}"
          + (f", metrics on :{running.metrics_http.server_port}" if running.metrics_http else ""), flush=True)
    stop.wait()
    print("nqec serve: shutting down, finishing in-flight calls", flush=True)
    running.stop()
