"""Assemble and run the gRPC server: decoder service, health, reflection, auth, TLS, metrics."""

from __future__ import annotations

import hmac
import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from decoder.errors import NqecError
from server.generated import decoder_pb2 as pb2
from server.generated import decoder_pb2_grpc as pb2_grpc
from server.config import ServerConfig
from server.metrics import ServerMetrics
from server.circuits import join_models, load_circuit_models
from server.models import ServedModel, load_models
from server.adapt import start_adapters
from server.service import DecoderService
from server.warm import WindowWarmer

log = logging.getLogger(__name__)
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Decoder"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # reachable without the token
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"  # same messages as v1alpha, newer name
WATCH_INTERVAL_S = 0.5  # how often health is brought in line with the models' workers


class TokenAuth(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` metadata (health and reflection stay open).

    The scheme is matched without regard to case (RFC 7235), the token exactly."""

    def __init__(self, token: str):
        self.token = token.encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer <token>' metadata")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    def _authorized(self, metadata) -> bool:
        scheme, _, token = dict(metadata or ()).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(OPEN_METHODS) or self._authorized(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        return self._deny_stream if method.endswith("DecodeStream") else self._deny_unary


class _Malformed:
    """Stands for a request message that did not parse (the handler answers INVALID_ARGUMENT)."""

    def __init__(self, error: Exception):
        self.error = error


class MalformedRequests(grpc.ServerInterceptor):
    """Answers a request whose bytes are not a valid message with INVALID_ARGUMENT naming the
    expected message type (gRPC's own answer is INTERNAL, which reads as a server fault)."""

    def __init__(self):
        self._wrapped: dict[str, object] = {}  # method -> its tolerant handler, built on its first call

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None or handler.request_deserializer is None or not method.startswith(f"/{SERVICE_NAME}/"):
                return handler  # other services, and unknown methods (never cached: clients choose them)
            wrapped = self._wrapped[method] = self._tolerant(handler, method)
        return wrapped

    @staticmethod
    def _tolerant(handler, method: str):
        """``handler`` with a deserializer that marks bad bytes instead of raising, and behaviours that
        answer such a request with INVALID_ARGUMENT."""
        parse = handler.request_deserializer

        def tolerant(data: bytes):
            try:
                return parse(data)
            except Exception as exc:  # DecodeError and the like: the client sent bytes of another shape
                return _Malformed(exc)

        def refuse(context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the request is not a valid {method.rsplit('/', 1)[-1]} request "
                          f"message of nqec.v1 (see proto/decoder.proto)")

        if handler.unary_unary is not None:
            behaviour = handler.unary_unary

            def unary(request, context):
                if isinstance(request, _Malformed):
                    refuse(context)
                return behaviour(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, tolerant, handler.response_serializer)
        if handler.stream_stream is not None:
            behaviour = handler.stream_stream

            def checked(requests, context):
                for request in requests:
                    if isinstance(request, _Malformed):
                        refuse(context)
                    yield request

            def stream(requests, context):
                return behaviour(checked(requests, context), context)

            return grpc.stream_stream_rpc_method_handler(stream, tolerant, handler.response_serializer)
        return handler


class RunningServer:
    """A started server; ``stop()`` finishes in-flight calls before returning.

    Health follows the models: each model has its own health service name (its served name),
    SERVING while its batch worker runs; a watcher restarts a stopped worker and reports
    NOT_SERVING for a model whose worker cannot be brought back. An any-length model is
    NOT_SERVING until its window graphs are built (in the background, right after start:
    :meth:`wait_ready` waits for all of them)."""

    def __init__(self, server: grpc.Server, service: DecoderService, health_servicer, port: int,
                 metrics: ServerMetrics, metrics_http=None):
        self.server, self.service, self.health, self.port = server, service, health_servicer, port
        self.metrics, self.metrics_http = metrics, metrics_http
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="health-watcher", daemon=True)
        self._watcher.start()
        self.warmer = WindowWarmer(service.models, self._model_ready).start()

    def _model_ready(self, name: str) -> None:
        if not self._stopping.is_set():
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every any-length model's window graphs are built; True if they are (False
        after ``timeout`` or when building failed: the log says why)."""
        self.warmer.wait(timeout)
        return all(m.windowed.prepared for m in self.service.models.values() if m.windowed is not None)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            self.refresh_health()

    def refresh_health(self) -> None:
        """Restart stopped batch workers and set each model's health from its worker."""
        for name, batcher in self.service.batchers.items():
            if not batcher.alive:
                batcher.revive()
                self.metrics.worker_restarts.labels(name).inc()
            serving = health_pb2.HealthCheckResponse.SERVING if batcher.alive else health_pb2.HealthCheckResponse.NOT_SERVING
            self.health.set(name, serving)

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self.warmer.close()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for adapter in self.service.adapters.values():
            adapter.close()
        self.service.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()


def start_server(config: ServerConfig, models: dict[str, ServedModel] | None = None) -> RunningServer:
    """Load models (unless given), start serving, and return the running server.

    Settings that cannot work and ports already in use raise NqecError."""
    config.validate()
    if models is None:
        circuits = load_circuit_models(config.circuits, config.models_dir)  # --circuit NAME=FILE, read first
        models = join_models(load_models(config.models_dir, any_length=config.any_length), circuits)
    metrics = ServerMetrics()
    interceptors = ([TokenAuth(config.token)] if config.token else []) + [MalformedRequests()]
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes),
               ("grpc.so_reuseport", 0)]  # a second server on this port must fail, not share its connections
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers), interceptors=interceptors,
                         options=options)
    service = DecoderService(models, metrics, config)
    if config.adapt:
        service.adapters = start_adapters(models, service.batchers, metrics.registry, shots=config.adapt_shots,
                                          every=config.adapt_every)
    pb2_grpc.add_DecoderServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name, model in {"": None, SERVICE_NAME: None, **models}.items():
        warming = model is not None and model.windowed is not None and not model.windowed.prepared
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING if warming
                            else health_pb2.HealthCheckResponse.SERVING)
    _enable_reflection(server)
    address = f"{config.host}:{config.port}"
    try:
        if config.tls_cert:
            credentials = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(),
                                                        Path(config.tls_cert).read_bytes())])
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    except OSError as exc:
        raise NqecError(f"cannot read the TLS key or certificate: {exc}") from None
    if port == 0:
        raise NqecError(f"cannot listen on {address}: the port is in use or the address is not local")
    metrics_http = None
    if config.metrics_port is not None:
        try:
            metrics_http = metrics.serve(config.metrics_port, config.host)
        except OSError as exc:
            server.stop(0)
            raise NqecError(f"cannot serve metrics on {config.host}:{config.metrics_port}: {exc.strerror}") from None
    server.start()
    log.info("nqec serving %d models on %s:%d", len(models), config.host, port)
    return RunningServer(server, service, health_servicer, port, metrics, metrics_http)


def _enable_reflection(server: grpc.Server) -> None:
    """Server reflection under both names tools ask for: v1alpha and v1 (identical messages)."""
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),))


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
