"""What `make demo` tells about the clients, and the ModelDeployment it walks through."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from modeldeploy.api import ModelDeployment


def _scripts_module(name: str) -> Any:
    """A module of scripts/ (run with `python -m scripts.NAME`, not on the tests' path)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts.{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


demo_objects = _scripts_module("demo_objects")
model_deployment = demo_objects.model_deployment
summarize = demo_objects.summarize
PHASES = [("1.0.0 stable", 100.0), ("rollout of 1.1.0", 200.0), ("rollout of 2.0.0", 300.0)]


def _request(at: float, status: int, version: str = "", error: str = "") -> dict[str, Any]:
    return {"at": at, "seconds": 0.01, "status": status, "version": version, "error": error}


def test_requests_are_counted_in_the_phase_they_were_sent_in() -> None:
    results = {
        "requests": [
            _request(90.0, 200, "1.0.0"),  # before the first phase: counted in it
            _request(150.0, 200, "1.0.0"),
            _request(250.0, 200, "1.0.0"),
            _request(251.0, 200, "1.1.0"),
            _request(300.0, 422),
            _request(310.0, 200, "1.1.0"),
            _request(320.0, 0, error="connect"),
        ]
    }

    stable, good, bad = summarize(results, PHASES)

    assert stable.answered_by == {"1.0.0": 2}
    assert stable.failed == {}
    assert good.answered_by == {"1.0.0": 1, "1.1.0": 1}
    assert good.failed == {}
    assert bad.answered_by == {"1.1.0": 1}
    assert bad.failed == {"HTTP 422": 1, "connect": 1}
    assert bad.line() == (
        "rollout of 2.0.0: 3 requests, answered 1 by 1.1.0; failed 1 HTTP 422, 1 connect"
    )
    assert stable.line() == "1.0.0 stable: 2 requests, answered 2 by 1.0.0; failed none"


def test_no_requests_is_said_plainly() -> None:
    (only,) = summarize({"requests": None}, PHASES[:1])

    assert only.line() == "1.0.0 stable: 0 requests, answered none; failed none"


def test_the_demos_model_deployment_is_valid_with_and_without_placement() -> None:
    model = {"uri": "pvc://models/xgb-classifier.ubj", "sha256": "ab" * 32}
    placement = {
        "nodeSelector": {"modeldeploy.dev/node-tier": "real"},
        "tolerations": [{"key": "modeldeploy.dev/real-node", "operator": "Exists"}],
    }

    for server in (None, placement):
        parsed = ModelDeployment.model_validate(
            model_deployment("http://prometheus.demo:9090", model, server)
        )
        assert parsed.spec.model.uri == model["uri"]
    placed = ModelDeployment.model_validate(
        model_deployment("http://prometheus.demo:9090", model, placement)
    )
    assert placed.spec.server.node_selector == placement["nodeSelector"]
