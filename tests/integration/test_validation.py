"""The offline check's API objects on a real API server: the validation Job is a valid Job
owned by a real ModelDeployment, and the API server applies the CEL rules of
`spec.validation` as pydantic does (through a probe CRD with that schema)."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modeldeploy import crdgen
from modeldeploy.api import ValidationSpec, ValidationStatus, ValidationVerdict
from modeldeploy.validation import model_url, validation_job
from tests.integration.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.integration

PROBE_GROUP = "validation.probe.modeldeploy.dev"
PROBE_CRD = f"validationprobes.{PROBE_GROUP}"
DATASET = {"uri": "pvc://holdout/fraud/2024.parquet", "format": "parquet", "labelColumn": "y"}
SPEC: dict[str, Any] = {
    "dataset": DATASET,
    "metric": "auc",
    "min": 0.9,
    "maxDropVsStable": 0.01,
}


def _schema(model: type[Any], *, defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return crdgen.structural(raw, raw.get("$defs", {}), defaults=defaults)


def _probe_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": PROBE_CRD},
        "spec": {
            "group": PROBE_GROUP,
            "scope": "Namespaced",
            "names": {"kind": "ValidationProbe", "plural": "validationprobes"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": _schema(ValidationSpec, defaults=True),
                                "status": _schema(ValidationStatus, defaults=False),
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def probe_crd(cluster: Cluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(_probe_crd()))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{PROBE_CRD}", "--timeout=60s")
    yield
    cluster.kubectl("delete", "crd", PROBE_CRD, "--wait=false", check=False)


def _dry_run(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(manifest),
        check=False,
    )


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{PROBE_GROUP}/v1",
        "kind": "ValidationProbe",
        "metadata": {"name": "probe"},
        "spec": spec,
    }


def test_a_valid_spec_is_stored_with_its_defaults(cluster: Cluster, probe_crd, namespace: str):
    done = _dry_run(cluster, namespace, _probe(SPEC))
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)["spec"]
    assert stored["timeout"] == "10m"
    assert ValidationSpec.model_validate(stored).timeout == "10m"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"min": None, "maxDropVsStable": None}, "validation needs at least one bound"),
        ({"min": 2}, "write their bounds as fractions"),  # an integer in a number field
        ({"metric": "rmse", "min": 60, "max": 50}, "must not exceed validation.max"),
        ({"timeout": "30s"}, "must be at least 1m"),
        ({"timeout": "3h"}, "must be at most 2h"),
        (
            {"dataset": {**DATASET, "uri": "https://data.example.com/h.csv"}},
            "validation.dataset.sha256 is required for http(s) URIs",
        ),
        ({"dataset": {**DATASET, "uri": "s3://bucket/h.csv"}}, "dataset.uri"),
    ],
)
def test_the_api_server_and_pydantic_refuse_the_same_specs(
    cluster: Cluster, probe_crd, namespace: str, change: dict[str, Any], expected: str
):
    spec = {key: value for key, value in (SPEC | change).items() if value is not None}
    done = _dry_run(cluster, namespace, _probe(spec))
    assert done.returncode != 0, f"accepted: {spec}"
    assert expected in " ".join(done.stderr.split())
    with pytest.raises(ValidationError):
        ValidationSpec.model_validate(spec)


def test_the_status_is_accepted_as_the_operator_writes_it(
    cluster: Cluster, probe_crd, namespace: str
):
    status = ValidationStatus(
        revision="a81f3c9e0b",
        verdict=ValidationVerdict.FAIL,
        metric="auc",
        candidate=0.81,
        stable=0.93,
        rows=1000,
        min=0.9,
        max_drop_vs_stable=0.01,
        message="auc 0.81 < min 0.9",
        attempts=1,
        job="fraud-val-a81f3c9e0b-1a2b3c",
        at=datetime(2026, 12, 1, 7, tzinfo=UTC),
    )
    probe = _probe(SPEC) | {"status": status.model_dump(mode="json", by_alias=True)}
    done = _dry_run(cluster, namespace, probe)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spec"]["metric"] == "auc"


def _model_deployment(cluster: Cluster, crds_installed: list[str], namespace: str) -> dict:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "minimal.yaml").read_text())
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest)
    )
    return json.loads(cluster.kubectl("get", "md", "fraud", "-n", namespace, "-o", "json").stdout)


@pytest.mark.parametrize("stable", [True, False], ids=["against-stable", "first-deploy"])
def test_the_validation_job_is_a_valid_job_owned_by_its_model_deployment(
    cluster: Cluster, crds_installed: list[str], namespace: str, stable: bool
):
    owner = _model_deployment(cluster, crds_installed, namespace)
    validation = ValidationSpec.model_validate(SPEC | {"timeout": "15m", "maxRows": 5000})
    job = validation_job(
        "fraud",
        namespace,
        owner["metadata"]["uid"],
        "a81f3c9e0b",
        validation,
        "ghcr.io/modeldeploy/modelserver:0.1.0",
        model_url("fraud-canary", namespace, "fraud-detector", "2.0.0"),
        model_url("fraud-stable", namespace, "fraud-detector", "1.0.0") if stable else None,
        attempt=2,
    )
    done = _dry_run(cluster, namespace, job)
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    assert stored["spec"]["activeDeadlineSeconds"] == 900
    assert stored["spec"]["backoffLimit"] == 0
    pod = stored["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"][-1]["persistentVolumeClaim"] == {"claimName": "holdout", "readOnly": True}
    assert ("--stable-url=" in " ".join(pod["containers"][0]["args"])) == stable
