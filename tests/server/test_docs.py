"""docs/server.md documents every setting and every metric, so users can rely on it."""

import re
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


OUTCOMES = {value for name, value in vars(metrics).items() if name.startswith("OUTCOME_")}


def documented_outcomes() -> dict[str, list[int]]:
    """The outcome table of docs/server.md: outcome -> example status codes of its row."""
    rows = re.findall(r"^\| `([a-z_]+)` \| ([0-9x, ]+) \|", DOCS, flags=re.MULTILINE)
    return {
        name: [
            code
            for part in codes.split(",")
            for code in (
                [int(part.strip()[0]) * 100, int(part.strip()[0]) * 100 + 3]
                if part.strip().endswith("xx")
                else [int(part)]
            )
        ]
        for name, codes in rows
    }


def test_every_outcome_is_documented_with_the_codes_that_give_it():
    table = documented_outcomes()
    assert set(table) == OUTCOMES
    for name, codes in table.items():
        assert [metrics.outcome(code) for code in codes] == [name] * len(codes)
