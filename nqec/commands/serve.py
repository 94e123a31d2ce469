"""``nqec serve``: the gRPC decoding service; every default comes from ``ServerConfig``."""

from __future__ import annotations

import argparse

from nqec.commands.common import positive_int


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from server.app import serve_forever
    from server.config import ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_forever(ServerConfig(host=args.host, port=args.port, models_dir=args.models, max_batch=args.max_batch,
                               max_wait_us=args.max_wait_us, tls_cert=args.tls_cert, tls_key=args.tls_key,
                               token=args.token, metrics_port=args.metrics_port, workers=args.workers,
                               max_streams=args.max_streams, max_inflight_shots=args.max_inflight_shots))
    return 0


def register(commands) -> None:
    from server.config import ServerConfig

    defaults = ServerConfig()
    serve = commands.add_parser("serve", help="run the gRPC decoding service")
    serve.add_argument("--models", default=defaults.models_dir,
                       help="a folder of bundles to serve besides the shipped ones")
    serve.add_argument("--host", default=defaults.host)
    serve.add_argument("--port", type=int, default=defaults.port)
    serve.add_argument("--max-batch", type=positive_int, default=defaults.max_batch,
                       help="most shots decoded in one batch")
    serve.add_argument("--max-wait-us", type=int, default=defaults.max_wait_us,
                       help="how long a batch waits for more requests")
    serve.add_argument("--max-inflight-shots", type=positive_int, default=defaults.max_inflight_shots,
                       help="shots queued or decoding at once; past it requests get RESOURCE_EXHAUSTED")
    serve.add_argument("--workers", type=positive_int, default=defaults.workers,
                       help="threads serving calls (each open DecodeStream holds one)")
    serve.add_argument("--max-streams", type=int, default=defaults.max_streams,
                       help="open DecodeStreams; more get RESOURCE_EXHAUSTED (must be below --workers)")
    serve.add_argument("--tls-cert", default=defaults.tls_cert)
    serve.add_argument("--tls-key", default=defaults.tls_key)
    serve.add_argument("--token", default=defaults.token, help="require 'authorization: Bearer TOKEN' metadata")
    serve.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                       help="serve Prometheus /metrics on this port (default: no metrics listener)")
    serve.set_defaults(func=cmd_serve)
