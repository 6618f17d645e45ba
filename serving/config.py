"""Typed configuration of ``tworec serve``: every setting once, with its reason; the command
line derives its flags from these classes (tworec.settings). Nothing here imports gRPC."""
from __future__ import annotations

from dataclasses import dataclass

from tworec.live.config import LiveConfig
from tworec.live.exploration import ExplorationConfig
from tworec.settings import section, setting


@dataclass(frozen=True)
class SecurityConfig:
    tls_cert: str | None = setting(None, "PEM server certificate chain: serve TLS only (no plaintext port)")
    tls_key: str | None = setting(None, "PEM private key of --tls-cert")
    tls_client_ca: str | None = setting(None, "PEM CA: require client certificates it signed (mutual TLS)")
    tokens_file: str | None = setting(None, "accepted bearer tokens, one per line (health checks stay open)")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key)


@dataclass(frozen=True)
class GatewayConfig:
    candidates: int = setting(200, "retrieved per request and re-ranked")
    ranker_budget_s: float = setting(0.25, "Triton's time for the ranker before the answer degrades to retrieval order")
    item_tower_budget_s: float = setting(5.0, "Triton's time to embed upserted items or a text query")
    deadline_margin_s: float = setting(0.002, "kept back from the caller's deadline for building the response")
    unknown_visitors: str = setting("model", "how a request with no known user and no items is answered: model (the "
                                             "query tower's answer for an unknown user, ranked, as eval scores it) or "
                                             "popularity (popular items with new items interleaved)",
                                    choices=("model", "popularity"))
    cold_start_share: float = setting(0.2, "with unknown_visitors popularity: the share of the answer given to new "
                                           "items")


@dataclass(frozen=True)
class ServeConfig:
    repo: str = setting("", "deployment repository (tworec export)", required=True)
    host: str = setting("127.0.0.1", "gateway address: loopback unless told otherwise")
    port: int = setting(0, "gateway port (0: a free one, printed at start)")
    triton_address: str | None = setting(None, "host:port of a running Triton (none: start one on loopback)")
    triton_binary: str | None = setting(None, "tritonserver binary (none: the nvidia-pytriton wheel's)")
    workers: int = setting(16, "gRPC worker threads")
    reload_poll_s: float = setting(1.0, "how often the manifest is checked for a new version")
    model_ready_timeout_s: float = setting(120.0, "how long Triton may take to load a version's models")
    grace_s: float = setting(10.0, "on SIGTERM, how long requests in flight may finish")
    tf_threads: int = setting(1, "the gateway's TensorFlow threads (the query tower runs on request threads)")
    blas_threads: int = setting(1, "numpy's BLAS threads in the gateway: requests already run on parallel threads, "
                                   "and BLAS threads inside each oversubscribe the cores")
    ranker_shared_memory: bool = setting(True, "send ranker rows to a Triton this command starts through /dev/shm "
                                               "(an external --triton-address always gets gRPC messages)")
    security: SecurityConfig = section(SecurityConfig, "transport security and tokens")
    gateway: GatewayConfig = section(GatewayConfig, "request handling")
    live: LiveConfig = section(LiveConfig, "the live loop: event log, user state, trending")
    exploration: ExplorationConfig = section(ExplorationConfig, "the exploration slot", prefix="exploration_")

    @property
    def event_log(self) -> str:
        """Where the replicas' event logs live: the setting, or REPO/events."""
        import os

        return self.live.event_log or os.path.join(self.repo, "events")
