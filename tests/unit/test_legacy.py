"""Objects an older release stored that today's rules reject: what is clamped, what is not."""

import copy

import pytest
from pydantic import ValidationError

from modeldeploy.api import ModelDeployment
from modeldeploy.legacy import repair

SHA = "ab" * 32


def stored(**spec):
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1", "generation": 3},
        "spec": {
            "model": {"name": "fraud", "version": "2", "uri": "pvc://m/f.ubj"},
            "rollout": {"interval": "60s"},
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("spec", "field", "value"),
    [
        ({"rollout": {"interval": "0s"}}, ("rollout", "interval"), "1s"),
        (
            {"rollout": {"interval": "250ms", "progressDeadline": "0s"}},
            ("rollout", "interval"),
            "1s",
        ),
        (
            {"analysis": {"prometheus": {"url": "http://p:9090", "timeout": "10m"}}},
            ("analysis", "prometheus", "timeout"),
            "60s",
        ),
    ],
)
def test_durations_out_of_bounds_are_clamped_and_the_object_is_usable(spec, field, value):
    body = stored(**spec)
    with pytest.raises(ValidationError):
        ModelDeployment.model_validate(body)
    repaired = repair(body)
    md = ModelDeployment.model_validate(repaired.body)
    node = md.spec.model_dump(by_alias=True)
    for key in field:
        node = node[key]
    assert node == value
    assert repaired.clamped
    assert not repaired.unusable
    assert all("which this operator enforces" in note for note in repaired.clamped)


def test_the_stored_object_itself_is_left_alone():
    body = stored(rollout={"interval": "0s"})
    before = copy.deepcopy(body)
    repair(body)
    assert body == before


@pytest.mark.parametrize("name", ["modelserver_model_uri", "ModelServer_Model_Sha256"])
def test_an_operator_variable_in_another_letter_case_makes_the_spec_unusable(name):
    body = stored(server={"env": [{"name": name, "value": "x"}, {"name": "KEEP", "value": "1"}]})
    repaired = repair(body)
    assert [e["name"] for e in repaired.body["spec"]["server"]["env"]] == ["KEEP"]
    assert repaired.unusable == [
        f"spec.server.env sets {name}, which the operator sets itself (names are compared in "
        "any letter case): remove it, or use the matching spec field"
    ]


@pytest.mark.parametrize(
    "url", ["http://internal/admin#", "http://p:9090/?x=1", "http://a@b/", "http://p:99999/"]
)
def test_a_prometheus_url_refused_today_makes_the_spec_unusable(url):
    repaired = repair(stored(analysis={"prometheus": {"url": url}}))
    assert "prometheus" not in repaired.body["spec"]["analysis"]
    (note,) = repaired.unusable
    assert note.startswith("analysis.prometheus.url ")
    assert repr(url) in note


def test_the_stables_recorded_template_is_stripped_of_operator_variables():
    body = stored()
    body["status"] = {
        "stable": {
            "revision": "r1",
            "version": "1",
            "template": {
                "model": {"name": "fraud", "version": "1", "uri": "pvc://m/f.ubj"},
                "server": {"env": [{"name": "modelserver_model_uri", "value": "http://x"}]},
            },
        }
    }
    with pytest.raises(ValidationError):
        ModelDeployment.model_validate(body)
    repaired = repair(body)
    md = ModelDeployment.model_validate(repaired.body)
    assert md.status.stable is not None
    assert md.status.stable.template is not None
    assert md.status.stable.template.server.env == []
    assert repaired.status_fixed
    assert not repaired.unusable


def test_a_valid_object_needs_no_repair():
    repaired = repair(stored())
    assert (repaired.clamped, repaired.unusable, repaired.status_fixed) == ([], [], [])
