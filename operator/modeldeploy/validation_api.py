"""The API of the offline champion-challenger check: `spec.validation` and
`status.validation` of a ModelDeployment (docs/validation.md).

Like api.py, every cross-field rule is written twice: a pydantic validator and a CEL rule.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from modeldeploy.api import (
    DURATION_PATTERN,
    SHA256_PATTERN,
    URI_PATTERN,
    ApiModel,
    StatusModel,
    _duration_rules,
    _within,
    cel,
    validations,
)


class DatasetFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"


class ValidationMetric(StrEnum):
    ACCURACY = "accuracy"
    AUC = "auc"
    F1 = "f1"
    LOG_LOSS = "logLoss"
    RMSE = "rmse"
    MAE = "mae"


# Losses: lower is better, so a drop in quality is a rise of the value.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {ValidationMetric.LOG_LOSS, ValidationMetric.RMSE, ValidationMetric.MAE}
)
# Scores that lie within 0..1.
FRACTION_METRICS: frozenset[str] = frozenset(
    {ValidationMetric.ACCURACY, ValidationMetric.AUC, ValidationMetric.F1}
)

_DATASET_SHA_RULE = "!self.uri.startsWith('http') || has(self.sha256)"
_DATASET_SHA_MESSAGE = (
    "validation.dataset.sha256 is required for http(s) URIs; pin the file's digest (sha256sum FILE)"
)


class DatasetSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_DATASET_SHA_RULE, _DATASET_SHA_MESSAGE, ".sha256"))
    )

    uri: Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=2048)] = Field(
        description=(
            "Where the labelled hold-out set lives: file:///path (in the server image), "
            "http(s)://host/path, or pvc://claim-name/path/in/volume (mounted read-only)."
        ),
        json_schema_extra=validations(
            cel(
                "self.matches('^(file|https?|pvc)://')",
                "validation.dataset.uri must start with file://, http://, https:// or pvc://",
            )
        ),
    )
    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)] | None = Field(
        default=None,
        description="SHA-256 of the file (64 hex characters); required for http(s).",
    )
    format: DatasetFormat = Field(
        description="csv (a header row, then one row per example), parquet or jsonl (one JSON "
        "object per line)."
    )
    label_column: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description=(
            "Column with the true labels. Every other column is a feature, in file order, "
            "unless the model names its features and the file has them all."
        )
    )

    @model_validator(mode="after")
    def _pinned_download(self) -> DatasetSpec:
        if self.uri.startswith("http") and self.sha256 is None:
            raise ValueError(_DATASET_SHA_MESSAGE)
        return self


ValidationTimeout = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within("1m", "2h")),
    Field(json_schema_extra=_duration_rules("1m", "2h")),
]

_BOUND_RULE = (
    "has(self.min) || has(self.max) || has(self.maxDropVsStable) "
    "|| has(self.minImprovementOverStable)"
)
_BOUND_MESSAGE = (
    "validation needs at least one bound: min, max, maxDropVsStable or minImprovementOverStable"
)
_MIN_MAX_RULE = "!has(self.min) || !has(self.max) || self.min <= self.max"
_MIN_MAX_MESSAGE = "validation.min must not exceed validation.max"
_FRACTION_RULE = (
    "!(self.metric in ['accuracy', 'auc', 'f1']) || ("
    "(!has(self.min) || self.min <= 1.0) && (!has(self.max) || self.max <= 1.0) "
    "&& (!has(self.maxDropVsStable) || self.maxDropVsStable <= 1.0) "
    "&& (!has(self.minImprovementOverStable) || self.minImprovementOverStable <= 1.0))"
)
_FRACTION_MESSAGE = (
    "accuracy, auc and f1 lie within 0..1: write their bounds as fractions (0.9, not 90)"
)


class ValidationSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(_BOUND_RULE, _BOUND_MESSAGE),
            cel(_MIN_MAX_RULE, _MIN_MAX_MESSAGE),
            cel(_FRACTION_RULE, _FRACTION_MESSAGE),
        )
    )

    dataset: DatasetSpec = Field(description="The labelled hold-out set.")
    metric: ValidationMetric = Field(
        description=(
            "accuracy, auc, f1 or logLoss for classifiers; rmse or mae for regressors. "
            "logLoss, rmse and mae are losses: lower is better."
        )
    )
    min: float | None = Field(
        default=None, ge=0, description="Lowest passing value of the candidate's metric."
    )
    max: float | None = Field(
        default=None, ge=0, description="Highest passing value of the candidate's metric."
    )
    max_drop_vs_stable: float | None = Field(
        default=None,
        ge=0,
        description=(
            "How much worse than the stable on the same rows the candidate may be, in the "
            "metric's units: a fall for accuracy, auc and f1, a rise for the losses. "
            "Not checked on a first deployment."
        ),
    )
    min_improvement_over_stable: float | None = Field(
        default=None,
        ge=0,
        description=(
            "How much better than the stable on the same rows the candidate must be, in the "
            "metric's units: a rise for accuracy, auc and f1, a fall for the losses. "
            "Not checked on a first deployment."
        ),
    )
    timeout: ValidationTimeout = Field(
        default="10m",
        description="How long the check may run (1m..2h); a check still running then is an Error.",
    )
    max_rows: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Use only the first rows of the dataset.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ValidationSpec:
        bounds = (self.min, self.max, self.max_drop_vs_stable, self.min_improvement_over_stable)
        if all(bound is None for bound in bounds):
            raise ValueError(_BOUND_MESSAGE)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(_MIN_MAX_MESSAGE)
        if self.metric in FRACTION_METRICS and any(b is not None and b > 1 for b in bounds):
            raise ValueError(_FRACTION_MESSAGE)
        return self


class ValidationVerdict(StrEnum):
    PENDING = "Pending"
    PASS = "Pass"
    FAIL = "Fail"
    ERROR = "Error"


class ValidationStatus(StatusModel):
    revision: str = Field(description="The candidate revision that was checked.")
    verdict: ValidationVerdict = Field(
        description=(
            "Pending (the Job runs), Pass, Fail (a bound failed: the revision is rejected) or "
            "Error (the Job failed or timed out; counts toward rollout.inconclusiveLimit)."
        )
    )
    metric: str = Field(description="The metric that was computed.")
    candidate: float | None = Field(default=None, description="The candidate's value.")
    stable: float | None = Field(
        default=None, description="The stable's value on the same rows; none on a first deploy."
    )
    rows: int | None = Field(default=None, description="Rows of the dataset that were used.")
    min: float | None = Field(default=None, description="The min bound that was applied.")
    max: float | None = Field(default=None, description="The max bound that was applied.")
    max_drop_vs_stable: float | None = Field(
        default=None, description="The maxDropVsStable bound that was applied."
    )
    min_improvement_over_stable: float | None = Field(
        default=None, description="The minImprovementOverStable bound that was applied."
    )
    message: str = Field(default="", description="The verdict in words, naming a failed bound.")
    attempts: int = Field(default=0, description="Jobs started for this revision so far.")
    job: str = Field(default="", description="Name of the latest validation Job.")
    at: datetime = Field(description="When this verdict was reached.")
