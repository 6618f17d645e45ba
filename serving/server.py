"""``tworec serve --repo DIR``: Triton (the ranker and item tower) + the gRPC gateway.

Start-up: check the repository → start Triton on loopback → wait until the current version's
models are ready → load the gateway bundle → start the gRPC server (with grpc.health.v1 and
server reflection) → print ``host:port``. A watcher polls manifest.json and loads a new version
beside the running one, switching over only when it is complete; requests in flight finish on the
version they started with. SIGTERM: health goes NOT_SERVING, in-flight requests finish (grace),
then Triton stops.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tworec.artifacts import ArtifactError
from tworec.errors import UserError
from tworec.export.artifact import DeploymentRepository
from tworec.live.recorder import EventRecorder
from tworec.serving.bundle import Bundle, ConfigError, current_version
from tworec.serving.config import ServeConfig
from tworec.serving.gateway import Recommender, pb
from tworec.serving.handlers import add_recommender
from tworec.serving.security import BearerTokenInterceptor, accepted_tokens, server_credentials
from tworec.serving.triton import TritonConfig, TritonError, TritonServer
from tworec.serving.triton_models import TritonModels

log = logging.getLogger("tworec.serve")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
MAX_MESSAGE_BYTES = 4 << 20


class Service:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.triton_server: TritonServer | None = None  # None when config.triton_address names one
        self.models: TritonModels | None = None  # the gateway's client of Triton's models
        self.bundle: Bundle | None = None  # the version being served
        self.recommender: Recommender | None = None
        self.recorder: EventRecorder | None = None  # the event log and live state
        self.server: grpc.Server | None = None
        self.health: health.HealthServicer | None = None
        self.port: int | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def _wait_models(self, models: TritonModels, bundle: Bundle, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        pending = dict(bundle.triton_versions)
        while pending and time.monotonic() < deadline:
            pending = {m: v for m, v in pending.items() if not models.ready(m, v)}
            if pending:
                time.sleep(0.2)
        if pending:
            tail = self.triton_server.log_tail() if self.triton_server else ""
            raise TritonError(f"Triton did not load {pending} within {timeout_s:.0f}s; its log ends:\n{tail}")

    def start(self) -> "Service":
        c = self.config
        version = current_version(c.repo)  # ConfigError with the fix if the repository is missing
        from threadpoolctl import threadpool_limits

        from tworec.tf_setup import limit_threads

        if not limit_threads(c.tf_threads):
            log.debug("TensorFlow already running: its thread pools keep their sizes")
        threadpool_limits(c.blas_threads, user_api="blas")  # process-wide, like TensorFlow's threads
        try:
            credentials, tokens = server_credentials(c.security), accepted_tokens(c.security)
        except (OSError, ValueError) as err:
            raise ConfigError(f"security settings: {err}") from err
        repository = DeploymentRepository(c.repo)
        if not repository.triton.is_dir():
            raise ConfigError(f"{repository.triton} is missing: the repository is incomplete, re-run `tworec export`")
        try:
            if c.triton_address is None:
                # Triton only ever listens on loopback: the gateway is the service's front door.
                self.triton_server = TritonServer(TritonConfig(str(repository.triton), binary=c.triton_binary))
                self.triton_server.start()
                address = self.triton_server.grpc_address
            else:
                address = c.triton_address
            self.models = TritonModels(address, shared_memory=c.ranker_shared_memory and c.triton_address is None)
            bundle = self._bundle(version)
            self._wait_models(self.models, bundle, c.model_ready_timeout_s)
            self._warm_up(bundle)
            self.bundle = bundle
            self.recorder = EventRecorder.open(c.live, c.event_log, bundle.live_half_life_s)
            self.recommender = Recommender(lambda: self.bundle, self.models, c.gateway, self.recorder, c.exploration)
            replayed = self.recorder.replay(self._known_item, self.recommender.replay_logged_change)
            if replayed:
                log.info("replayed the event log of %s: %s", c.live.replica, replayed)
            self.server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=c.workers),
                interceptors=[BearerTokenInterceptor(tokens)] if tokens else [],
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
            add_recommender(self.recommender, self.server, pb, SERVICE_NAME)
            self.health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME), self.server)
            if credentials is None:
                self.port = self.server.add_insecure_port(f"{c.host}:{c.port}")
            else:  # TLS only: no plaintext port is opened
                self.port = self.server.add_secure_port(f"{c.host}:{c.port}", credentials)
            if not self.port:
                raise ConfigError(f"cannot listen on {c.host}:{c.port}: the address is in use or invalid")
            self.server.start()
            for name in ("", SERVICE_NAME):
                self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            self._watcher = threading.Thread(target=self._watch, name="tworec-reload", daemon=True)
            self._watcher.start()
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _known_item(self, item: str) -> bool:
        return item in self.bundle.items.row_of and item not in self.bundle.removed

    # --- reloading --------------------------------------------------------------------------------
    def _supervise_triton(self):
        """Triton started by this service and found dead is restarted on the same ports; until it
        is back, Recommend answers degraded (retrieval order) and the item tower is UNAVAILABLE."""
        server = self.triton_server
        if server is None or self._stop.is_set() or (server.process is not None and server.process.poll() is None):
            return
        self.recommender.counters.add("triton_restarts")
        if server.process is not None:
            log.error("tritonserver exited with code %s; restarting it. Its log ends:\n%s",
                      server.process.returncode, server.log_tail(10))
            server.stop()
        replacement = TritonServer(dataclasses.replace(server.config, **server.ports))
        replacement.start()
        try:
            self._wait_models(self.models, self.bundle, self.config.model_ready_timeout_s)
            self._warm_up(self.bundle)
        except BaseException:
            replacement.stop()
            raise
        self.triton_server = replacement
        if self._stop.is_set():  # the service stopped while Triton was coming back
            replacement.stop()
            return
        log.warning("tritonserver is back on %s", replacement.grpc_address)

    def _watch(self):
        failed = None
        while not self._stop.wait(self.config.reload_poll_s):
            try:
                self._supervise_triton()
            except Exception as err:  # noqa: BLE001 - keep serving degraded, try again next round
                log.error("restarting tritonserver failed: %s", err)
            try:
                current = DeploymentRepository(self.config.repo).manifest().get("current")
            except (OSError, ValueError, ArtifactError) as err:
                log.warning("cannot read the manifest: %s", err)
                continue
            if current is None or current == self.bundle.version or current == failed:
                continue
            try:
                self.load_version(int(current))
                failed = None
            except Exception as err:  # noqa: BLE001 - keep serving the loaded version
                failed = current
                log.error("version %s did not load, still serving %s: %s", current, self.bundle.version, err)

    def _warm_up(self, bundle: Bundle):
        """One call through each model, so the first user request does not pay for TensorFlow's
        tracing inside Triton (seconds) and degrade."""
        import numpy as np

        from tworec import contract

        c = min(200, len(bundle.items.item_ids))
        rows = {t.name: np.zeros((c, *t.dims(bundle.dim)), t.dtype) for t in contract.RANKER_INPUTS}
        rows["item_embedding"] = bundle.items.item_embedding[:c].copy()
        self.models.rank(bundle.triton_versions[bundle.ranker_model], rows, 60.0)
        self.models.embed_items(bundle.triton_versions[bundle.item_tower_model], np.array([[101, 102]]),
                                np.ones((1, 2), np.int32), np.zeros((1, contract.MAX_ITEM_CATEGORIES), np.int32), 60.0)
        bundle.query(0, [0], [0], 1)

    def _bundle(self, version: int) -> Bundle:
        """A version loaded and made ready to serve (its exploration index built when needed)."""
        bundle = Bundle(self.config.repo, version)
        if self.config.exploration.enabled:
            bundle.prepare_exploration(self.config.exploration.index_above)
        return bundle

    def load_version(self, version: int):
        bundle = self._bundle(version)
        if self.recorder is not None and bundle.live_half_life_s != self.recorder.state.half_life_s:
            raise ConfigError(f"version {version} counts live interactions with a half-life of "
                              f"{bundle.live_half_life_s:g}s, the live state {self.recorder.state.half_life_s:g}s: "
                              f"restart the gateways (and clear the shared state) to change it")
        self._wait_models(self.models, bundle, self.config.model_ready_timeout_s)
        self._warm_up(bundle)
        self.recommender.replay_live_changes(bundle)
        self.bundle = bundle  # one reference swap: requests already running keep their bundle
        self.recommender.counters.add("reloads")
        log.info("serving version %s", version)

    # --- shutdown ---------------------------------------------------------------------------------
    def stop(self, grace: float | None = None):
        grace = self.config.grace_s if grace is None else grace
        self._stop.set()
        if self.server is not None:
            for name in ("", SERVICE_NAME):
                self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            self.server.stop(grace).wait()
            self.server = None
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.models is not None:
            self.models.close()
            self.models = None
        if self.triton_server is not None:
            self.triton_server.stop()
            self.triton_server = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve_forever(config: ServeConfig) -> int:
    """The ``tworec serve`` command: prints host:port once ready, stops cleanly on SIGTERM/SIGINT."""
    import signal
    import sys

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = Service(config).start()
    except (UserError, TritonError) as err:
        # One line saying what is wrong and how to fix it; details (e.g. Triton's log) follow.
        lines = str(err).splitlines()
        print(f"tworec serve: {lines[0]}", flush=True)
        if len(lines) > 1:
            print("\n".join(lines[1:]), file=sys.stderr, flush=True)
        return 2
    print(service.address, flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(serve_forever(ServeConfig(repo=sys.argv[1])))
