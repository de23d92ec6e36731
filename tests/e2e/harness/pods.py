"""One real modelserver process per Ready pod of a ModelDeployment's Deployments."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness.prometheus import RealPrometheus
from tests.support.processes import die_with_parent, free_port


@dataclass
class ServerProcess:
    pod: str
    track: str
    revision: str
    port: int
    process: subprocess.Popen[bytes]
    ready: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class PodMirror:
    """Keeps real servers in step with the Ready pods the cluster reports."""

    kubectl: Any  # the integration `cluster.kubectl`
    namespace: str
    name: str
    prometheus: RealPrometheus
    log_dir: Path
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> PodMirror:
        self._thread = threading.Thread(target=self._run, name="pod-mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        with self._lock:
            for server in self.servers.values():
                _terminate(server.process)
            self.servers.clear()

    def serving(self) -> list[ServerProcess]:
        with self._lock:
            return [s for s in self.servers.values() if s.ready]

    def _run(self) -> None:
        while not self._stop.is_set():
            # a half-observed cluster is seen consistently on the next pass
            with contextlib.suppress(subprocess.SubprocessError, json.JSONDecodeError, KeyError):
                self._sync()
            self._stop.wait(0.5)

    def _pods(self) -> list[dict[str, Any]]:
        done = self.kubectl(
            "-n",
            self.namespace,
            "get",
            "pods",
            "-l",
            f"modeldeploy.dev/modeldeployment={self.name}",
            "-o",
            "json",
            check=False,
        )
        if done.returncode != 0:
            return []
        pods: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        return [
            pod
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod.get("status", {}).get("conditions", [])
            )
        ]

    def _sync(self) -> None:
        pods = {pod["metadata"]["name"]: pod for pod in self._pods()}
        with self._lock:
            for gone in set(self.servers) - set(pods):
                _terminate(self.servers.pop(gone).process)
            for name, pod in pods.items():
                if name not in self.servers:
                    self.servers[name] = self._launch(pod)
            for server in self.servers.values():
                if not server.ready:
                    server.ready = _answers(server)
            targets = [
                (
                    s.address,
                    {"namespace": self.namespace, "pod": s.pod, "track_of_pod": s.track},
                )
                for s in self.servers.values()
                if s.ready
            ]
        self.prometheus.set_targets(targets)

    def _launch(self, pod: dict[str, Any]) -> ServerProcess:
        container = pod["spec"]["containers"][0]
        env = dict(os.environ)
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == (
                "metadata.namespace"
            ):
                env[entry["name"]] = self.namespace
        port = free_port()
        env.update(
            MODELSERVER_HOST="127.0.0.1",
            MODELSERVER_PORT=str(port),
            MODELSERVER_GRPC_PORT="0",  # the harness's clients speak REST; pods share a host
            MODELSERVER_CACHE_DIR=str(self.log_dir / "cache"),
        )
        labels = pod["metadata"]["labels"]
        log = (self.log_dir / f"{pod['metadata']['name']}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "modelserver"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()
        return ServerProcess(
            pod=pod["metadata"]["name"],
            track=labels["modeldeploy.dev/track"],
            revision=labels["modeldeploy.dev/revision"],
            port=port,
            process=process,
        )


def _answers(server: ServerProcess) -> bool:
    if server.process.poll() is not None:
        return False
    try:
        reply = httpx.get(f"http://{server.address}/v2/health/ready", timeout=0.5)
    except httpx.HTTPError:
        return False
    return reply.is_success


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
