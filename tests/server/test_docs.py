"""docs/server.md documents every setting and every metric, so users can rely on it."""

from pathlib import Path

import pytest

from modelserver import metrics
from modelserver.settings import Settings

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
METRIC_NAMES = [
    value
    for name, value in vars(metrics).items()
    if name.isupper() and str(value).startswith("modelserver_")
]


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_as_flag_and_variable(field: str):
    assert f"`--{field.replace('_', '-')}`" in DOCS
    assert f"`MODELSERVER_{field.upper()}`" in DOCS


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_metric_is_documented(name: str):
    assert f"`{name}`" in DOCS


def test_the_contract_metrics_are_all_defined():
    assert set(METRIC_NAMES) >= {
        "modelserver_requests_total",
        "modelserver_request_duration_seconds",
        "modelserver_inflight_requests",
        "modelserver_request_rows",
        "modelserver_model_load_seconds",
        "modelserver_prediction_value",
        "modelserver_model_info",
    }
