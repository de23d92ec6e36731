"""Run the app under uvicorn: one process, or several workers that share the metrics; each
process also serves gRPC (grpc_server.py) unless --grpc-port is 0."""

import contextlib
import logging
import os
import shutil
import signal
import socket

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.supervisors.multiprocess import Multiprocess

from modelserver.app import create_app
from modelserver.grpc_server import check_port_free
from modelserver.inference import InferenceEndpoints
from modelserver.loading import load_configured_model
from modelserver.metrics import MULTIPROCESS_DIR_VARIABLE
from modelserver.protocol import ServerConfig
from modelserver.settings import Settings

log = logging.getLogger(__name__)

# Workers are separate processes started by uvicorn; they get the parent's settings here.
WORKER_SETTINGS_VARIABLE = "MODELSERVER_WORKER_SETTINGS_JSON"


def serve(settings: Settings) -> None:
    """Load the model (raising StartupError on failure), then serve until SIGTERM."""
    if settings.grpc_port:
        check_port_free(settings.host, settings.grpc_port)
    loaded = load_configured_model(settings)
    log.info(
        "serving %s version %s on the %s track of ModelDeployment %s/%s%s",
        settings.model_name,
        settings.model_version,
        settings.track,
        settings.namespace or "-",
        settings.deployment,
        f", experiment variant {settings.variant}" if settings.variant else "",
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": settings.access_log,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(max(settings.graceful_timeout_seconds, 1)),
        "header_timeout_seconds": settings.header_timeout_seconds,
        "body_timeout_seconds": settings.body_timeout_seconds,
    }
    if settings.workers == 1:
        app = create_app(settings, loaded, CollectorRegistry(), serve_grpc=settings.grpc_port != 0)
        server = uvicorn.Server(ServerConfig(app, **options))  # type: ignore[arg-type]
        # uvicorn drains on SIGTERM, then raises the signal again to the handler that was
        # there before it; a no-op handler makes a completed drain exit 0, not 143.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        server.run()
        return
    # The parent has fetched, verified and test-loaded the artifact; workers load that copy.
    update: dict[str, object] = {"model_uri": str(loaded.path), "model_sha256": loaded.sha256}
    if loaded.profile_path is not None:
        update["profile_uri"] = str(loaded.profile_path)
    worker_settings = settings.model_copy(update=update)
    os.environ[WORKER_SETTINGS_VARIABLE] = worker_settings.model_dump_json()
    metrics_dir = settings.cache_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)
    config = ServerConfig(
        "modelserver.serve:worker_app",
        factory=True,
        workers=settings.workers,
        **options,  # type: ignore[arg-type]
    )
    _Supervisor(config, sockets=[config.bind_socket()]).run()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, which stops listening first on SIGTERM.

    The workers share one listening socket. Shutting it down here stops it for all of them
    at once, before any starts draining; otherwise the clients of a worker that drains
    first, told to reconnect, would queue on the socket still held by another worker and
    be reset when that one lets go of it.
    """

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already shut down
                sock.shutdown(socket.SHUT_RD)
            sock.close()


def worker_app() -> InferenceEndpoints:
    """Build the app inside a worker process (uvicorn imports this by name)."""
    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS_VARIABLE])
    loaded = load_configured_model(settings)
    return create_app(settings, loaded, CollectorRegistry(), serve_grpc=settings.grpc_port != 0)
