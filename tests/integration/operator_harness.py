"""Run the operator as a real process against the test cluster, and read its objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.processes import die_with_parent, free_port

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


class OperatorProcess:
    def __init__(self, kubeconfig: Path, namespace: str, log_dir: Path, identity: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_dir / f"operator-{identity}.log"
        self.identity = identity
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    def start(self, *extra_args: str) -> OperatorProcess:
        self.extra_args = list(extra_args) or self.extra_args
        command = [
            sys.executable,
            "-m",
            "modeldeploy",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
            "--lease-namespace",
            self.namespace,
            "--identity",
            self.identity,
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--bind-address",
            "127.0.0.1",
            "--log-format",
            "plain",
            "--default-image",
            "modelserver:test",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        # Generous: importing kopf and the kubernetes client is slow on a loaded machine.
        wait_for(self.alive, 90, f"operator {self.identity} to answer /healthz")
        return self

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            pytest.fail(f"operator {self.identity} exited; log:\n{self.log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def leading(self) -> bool:
        try:
            reply = httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1)
        except httpx.HTTPError:
            return False
        return bool(reply.json().get("leading"))

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Objects:
    """kubectl shortcuts for one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        done = self.cluster.kubectl("-n", self.namespace, *args, check=check, input=input)
        return str(done.stdout)

    def get(self, kind: str, name: str, managed_fields: bool = False) -> dict[str, Any] | None:
        """The object, or None; kubectl leaves managedFields out unless asked."""
        extra = ["--show-managed-fields"] if managed_fields else []
        done = self.cluster.kubectl(
            "-n", self.namespace, "get", kind, name, "-o", "json", *extra, check=False
        )
        if done.returncode != 0:
            return None
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args))["items"]
        return items

    def status(self, name: str) -> dict[str, Any]:
        md = self.get("md", name) or {}
        status: dict[str, Any] = md.get("status") or {}
        return status

    def outcome(self, name: str, version: str) -> dict[str, Any] | None:
        """The history entry that ended `version`'s canary (Promoted, RolledBack, ...)."""
        for entry in self.status(name).get("history", []):
            if entry["version"] == version and entry["outcome"] != "Deployed":
                return dict(entry)
        return None

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "md", name, "--type", "merge", "-p", json.dumps({"spec": spec}))

    def annotate(self, name: str, annotation: str, value: str) -> None:
        self.kubectl("annotate", "md", name, f"{annotation}={value}", "--overwrite")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.items("events")
            if event["involvedObject"].get("kind") == "ModelDeployment"
            and event["involvedObject"].get("name") == name
        ]

    def event_reasons(self, name: str) -> list[str]:
        return [str(event["reason"]) for event in self.events(name)]


@pytest.fixture
def objects(cluster: Any, namespace: str, crds_installed: list[str]) -> Objects:
    return Objects(cluster, namespace)


@pytest.fixture
def operator(
    cluster: Any, namespace: str, crds_installed: list[str], tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.kubeconfig, namespace, tmp_path, "primary").start()
    try:
        yield process
    finally:
        process.stop()


def model_deployment(name: str, version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    model = {
        "name": "fraud-detector",
        "version": version,
        "uri": f"https://models.example.com/fraud/{version}/model.ubj",
        "sha256": "ab" * 32,
    }
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }
