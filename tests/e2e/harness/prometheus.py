"""A real Prometheus (Debian's package) on 127.0.0.1, scraping targets from JSON files.

Two jobs: `modelserver` (the server processes, labelled as Kubernetes discovery would)
and `modeldeploy-operator` (the operator's /metrics, once `scrape_operator` names it).
Rule files given to `load_rules` are evaluated as a Prometheus of a cluster would.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.support.processes import die_with_parent, free_port

SCRAPE_INTERVAL = "1s"
OPERATOR_JOB = "modeldeploy-operator"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class RealPrometheus:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="modeldeploy-prometheus-"))
        self.targets_file = self.directory / "targets.json"
        self.operator_targets_file = self.directory / "operator-targets.json"
        self.rules_directory = self.directory / "rules"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "rule_files": [str(self.rules_directory / "*.yaml")],
            "scrape_configs": [
                {
                    "job_name": "modelserver",
                    "scrape_timeout": SCRAPE_INTERVAL,
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                },
                {
                    "job_name": OPERATOR_JOB,
                    "scrape_timeout": SCRAPE_INTERVAL,
                    # The operator's series carry their ModelDeployment's namespace, which
                    # must win over the target's own (the chart's ServiceMonitor does this).
                    "honor_labels": True,
                    "file_sd_configs": [
                        {"files": [str(self.operator_targets_file)], "refresh_interval": "1s"}
                    ],
                },
            ],
        }
        return json.dumps(config)

    def start(self) -> RealPrometheus:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (Debian package: prometheus)")
        self.set_targets([])
        self._write_targets(self.operator_targets_file, [])
        self.rules_directory.mkdir()
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(self._config())
        log = (self.directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Prometheus did not become ready:\n{self.log_tail()}")

    def set_targets(self, targets: list[tuple[str, dict[str, str]]]) -> None:
        """(host:port, labels) of every scrape target; written atomically."""
        self._write_targets(self.targets_file, targets)

    def scrape_operator(self, address: str, namespace: str = "modeldeploy-system") -> None:
        """Scrape the operator's /metrics at host:port, labelled with the namespace it runs
        in as Kubernetes discovery would (its ModelDeployment series keep their own)."""
        self._write_targets(self.operator_targets_file, [(address, {"namespace": namespace})])

    def load_rules(self, rules: Path) -> None:
        """Evaluate the rules file from now on (a configuration reload, as on SIGHUP)."""
        assert self.process is not None, "start() first"
        names = {group["name"] for group in yaml.safe_load(rules.read_text())["groups"]}
        shutil.copyfile(rules, self.rules_directory / f"{rules.stem}.yaml")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while names - self._rule_groups():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not load {rules}:\n{self.log_tail()}")
            time.sleep(0.2)

    def _rule_groups(self) -> set[str]:
        reply = httpx.get(f"{self.url}/api/v1/rules", timeout=5)
        return {group["name"] for group in reply.json()["data"]["groups"]}

    @staticmethod
    def _write_targets(path: Path, targets: list[tuple[str, dict[str, str]]]) -> None:
        groups = [{"targets": [address], "labels": labels} for address, labels in targets]
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(groups))
        staging.replace(path)

    def query(self, promql: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        result: list[dict[str, Any]] = reply.json()["data"]["result"]
        return result

    def log_tail(self, lines: int = 30) -> str:
        path = self.directory / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RealPrometheus:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
