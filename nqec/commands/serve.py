"""``nqec serve``: the gRPC decoding service. Each option's dest is a ``ServerConfig`` field and
its default that field's; ``ServerConfig.validate`` turns settings that cannot work into errors."""

from __future__ import annotations

import argparse
import dataclasses

from nqec.commands.common import positive_int


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from server.app import serve_forever
    from server.config import ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = vars(args)
    serve_forever(ServerConfig(**{f.name: given[f.name] for f in dataclasses.fields(ServerConfig) if f.name in given}))
    return 0


def register(commands) -> None:
    from server.config import ServerConfig

    defaults = ServerConfig()
    serve = commands.add_parser("serve", help="run the gRPC decoding service")
    serve.add_argument("--models", dest="models_dir", metavar="MODELS", default=defaults.models_dir,
                       help="a folder of bundles to serve besides the shipped ones")
    serve.add_argument("--no-any-length", dest="any_length", action="store_false",
                       help="serve no any-length (DecodeStream window) models: a faster start, less memory")
    serve.add_argument("--host", default=defaults.host)
    serve.add_argument("--port", type=int, default=defaults.port, help="0..65535 (0: any free port)")
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
    serve.add_argument("--max-streams-per-client", type=int, default=defaults.max_streams_per_client,
                       help=f"open DecodeStreams of one client connection (default {defaults.max_streams_per_client})")
    serve.add_argument("--stream-idle-s", type=float, default=defaults.stream_idle_s, metavar="SECONDS",
                       help=f"a DecodeStream silent this long is ended (default {defaults.stream_idle_s:g})")
    serve.add_argument("--tls-cert", default=defaults.tls_cert)
    serve.add_argument("--tls-key", default=defaults.tls_key)
    serve.add_argument("--token", default=defaults.token, help="require 'authorization: Bearer TOKEN' metadata")
    serve.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                       help="serve Prometheus /metrics on this port (default: no metrics listener)")
    serve.add_argument("--adapt", action="store_true", default=defaults.adapt,
                       help="matching and guided-matching models re-estimate their edge weights from the shots they decode and swap "
                            "them in while serving (GetModelInfo's metrics_json shows the estimate); every decoded shot "
                            "counts as the device's, so give adapting servers the device's traffic only")
    serve.add_argument("--adapt-shots", type=int, default=defaults.adapt_shots, metavar="N",
                       help=f"--adapt: the estimate stands on about N recent shots (default {defaults.adapt_shots:,})")
    serve.add_argument("--adapt-every", type=int, default=defaults.adapt_every, metavar="K",
                       help=f"--adapt: re-estimate every K new shots (default {defaults.adapt_every:,})")
    serve.add_argument("--circuit", dest="circuits", metavar="NAME=FILE", action="append", default=[],
                       help="also serve your own Stim circuit (repeatable): NAME-matching, NAME-matching-correlated, "
                            "and NAME-<bundle>[-guided] for every bundle whose network fits it")
    serve.set_defaults(func=cmd_serve)
