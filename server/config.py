"""Settings of the decoding service (no gRPC imports: the command line reads its defaults here)."""

from __future__ import annotations

import dataclasses

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
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port

    def validate(self) -> None:
        """Raise NqecError naming the setting that cannot work."""
        if self.workers < 2:
            raise NqecError(f"--workers must be >= 2, got {self.workers}")
        if not 0 <= self.max_streams < self.workers:
            raise NqecError(f"--max-streams must be in [0, --workers) so that unary calls and health checks keep "
                            f"a thread; got {self.max_streams} with {self.workers} workers")
        if self.max_inflight_shots < self.max_shots_per_request:
            raise NqecError(f"--max-inflight-shots ({self.max_inflight_shots}) must admit one full request "
                            f"({self.max_shots_per_request} shots)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise NqecError("TLS needs both --tls-cert and --tls-key")
