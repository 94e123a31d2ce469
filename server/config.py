"""Settings of the decoding service (no gRPC imports: the command line reads its defaults here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from decoder.errors import NqecError


@dataclasses.dataclass
class ServerConfig:
    """Every setting of ``nqec serve``; the command line takes its defaults from here."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0: pick a free port
    models_dir: str | None = None
    max_batch: int = 4096
    max_wait_us: int = 0
    max_shots_per_request: int = 1 << 16
    max_inflight_shots: int = 1 << 18  # over this, requests get RESOURCE_EXHAUSTED instead of queueing
    max_message_bytes: int = 16 << 20
    workers: int = 32  # threads serving calls; each open DecodeStream holds one
    max_streams: int = 16  # open DecodeStreams; more get RESOURCE_EXHAUSTED (must leave workers for unary calls)
    max_streams_per_client: int = 8  # open DecodeStreams of one client connection (gRPC peer)
    stream_idle_s: float = 30.0  # a DecodeStream that sends nothing this long is ended (DEADLINE_EXCEEDED)
    max_stream_bytes: int = 64 << 20  # event data one DecodeStream may hold (buffered rounds, open windows)
    max_stream_experiments: int = 1 << 18  # experiments open at once in one DecodeStream (blocks count theirs)
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    any_length: bool = True  # serve any-length (DecodeStream window) models; off: faster start, less memory
    adapt: bool = False  # matching and guided models re-estimate edge weights from the shots they decode
    adapt_shots: int = 100_000  # the estimate stands on about this many recent shots (exponential forgetting)
    adapt_every: int = 10_000  # re-estimate and swap the decoder after this many new shots
    circuits: list[str] = dataclasses.field(default_factory=list)  # "NAME=FILE.stim": models of the user's circuits

    def validate(self) -> None:
        """Raise NqecError naming the setting that cannot work."""
        if not 0 <= self.port <= 65535:
            raise NqecError(f"--port must be in 0..65535 (0: any free port), got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise NqecError(f"--metrics-port must be in 0..65535 (0: any free port), got {self.metrics_port}")
        if self.models_dir is not None and not Path(self.models_dir).is_dir():
            raise NqecError(f"--models {self.models_dir!r} is not a directory of model bundles")
        if self.workers < 2:
            raise NqecError(f"--workers must be >= 2, got {self.workers}")
        if not 0 <= self.max_streams < self.workers:
            raise NqecError(f"--max-streams must be in [0, --workers) so that unary calls and health checks keep "
                            f"a thread; got {self.max_streams} with {self.workers} workers")
        if self.max_inflight_shots < self.max_shots_per_request:
            raise NqecError(f"--max-inflight-shots ({self.max_inflight_shots}) must admit one full request "
                            f"({self.max_shots_per_request} shots)")
        if not 1 <= self.max_streams_per_client:
            raise NqecError(f"--max-streams-per-client must be >= 1, got {self.max_streams_per_client}")
        if not self.stream_idle_s > 0:
            raise NqecError(f"--stream-idle-s must be > 0 seconds, got {self.stream_idle_s}")
        from decoder.noise_estimate import MIN_SHOTS

        if self.adapt_shots < MIN_SHOTS:
            raise NqecError(f"--adapt-shots must be >= {MIN_SHOTS} (fewer do not pin down edge probabilities), "
                            f"got {self.adapt_shots}")
        if not 1 <= self.adapt_every <= self.adapt_shots:
            raise NqecError(f"--adapt-every must be in 1..--adapt-shots ({self.adapt_shots}), got {self.adapt_every}")
        from server.circuits import parse_circuit_option

        for option in self.circuits:
            name, path = parse_circuit_option(option)
            if not Path(path).is_file():
                raise NqecError(f"--circuit {name}={path}: no such circuit file")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise NqecError("TLS needs both --tls-cert and --tls-key")
