"""`modelserver validate`: the offline champion-challenger check (docs/validation.md).

Sends a labelled hold-out set through the candidate's and the stable's real V2 endpoints,
computes one metric for each with scikit-learn, and writes ONE JSON line to the
termination log and to stdout:

    {"metric": "auc", "candidate": 0.93, "stable": 0.91, "rows": 1000}     exit status 0
    {"error": "<one line>", "kind": "dataset"}                              exit status 1

The bounds are not judged here: the operator judges the values (modeldeploy.validation).
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal, NoReturn

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    CliApp,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from modelserver.settings import ENV_PREFIX, _UpperCaseEnvironment
from modelserver.validate_client import MODEL_URL_PATTERN, Endpoint, ModelInfo
from modelserver.validate_data import Dataset, DatasetFormat, fetch_dataset, read_dataset
from modelserver.validate_errors import ValidateError
from modelserver.validate_metrics import Metric, check_metric_fits, needs_probabilities, score

log = logging.getLogger("modelserver.validate")

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
# Kubernetes keeps at most 4096 bytes of a termination message.
_MESSAGE_LIMIT = 2000
_NAMES_SHOWN = 10


class ValidateSettings(BaseSettings):
    """Every option is a flag (--dataset-uri) and a variable (MODELSERVER_DATASET_URI)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        cli_prog_name="modelserver validate",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,
    )

    dataset_uri: str = Field(
        description="Hold-out set: a path, file://, http:// or https:// URI (pvc:// arrives "
        "as a path)."
    )
    dataset_sha256: str | None = Field(
        default=None, description="Hex sha256 of the dataset file; required for http(s)."
    )
    dataset_format: DatasetFormat = Field(description="csv (header row), parquet or jsonl.")
    label_column: str = Field(min_length=1, description="Column holding the true labels.")
    metric: Metric = Field(description="accuracy, auc, f1, logLoss (classifiers), rmse, mae.")
    candidate_url: str = Field(
        description="The candidate model's V2 URL: http://HOST/v2/models/NAME[/versions/V]."
    )
    stable_url: str | None = Field(
        default=None, description="The stable model's V2 URL; none for a first deployment."
    )
    max_rows: int | None = Field(
        default=None, ge=1, description="Use only the first rows of the dataset."
    )
    batch_rows: int = Field(default=256, ge=1, le=10000, description="Rows per request.")
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and read timeout of one request."
    )
    request_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a request after connection errors and HTTP 408/425/429/5xx.",
    )
    cache_dir: Path = Field(
        default=Path("/var/cache/modelserver"), description="Where a download is stored."
    )
    download_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and read timeout of the dataset download."
    )
    download_max_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest dataset that may be downloaded."
    )
    download_retries: int = Field(
        default=3, ge=0, description="Retries of a failed download (network errors and 5xx)."
    )
    termination_log: Path = Field(
        default=DEFAULT_TERMINATION_LOG,
        description="Where the result line is written: the default when that file exists, "
        "any other path always.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the progress lines on stderr."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _UpperCaseEnvironment(settings_cls)

    @field_validator("dataset_sha256")
    @classmethod
    def _normalise_sha256(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        digest = value.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("must be 64 hexadecimal characters")
        return digest

    @field_validator("candidate_url", "stable_url")
    @classmethod
    def _model_url(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_URL_PATTERN.match(value.rstrip("/")):
            raise ValueError(
                f"{value!r} is not a model's V2 URL; write it like "
                "http://HOST:PORT/v2/models/NAME or .../v2/models/NAME/versions/VERSION"
            )
        return value

    @model_validator(mode="after")
    def _pinned_download(self) -> "ValidateSettings":
        if self.dataset_uri.startswith(("http://", "https://")) and self.dataset_sha256 is None:
            raise ValueError("an http(s) dataset URI needs --dataset-sha256")
        return self


def run(settings: ValidateSettings) -> dict[str, Any]:
    """The result line's fields; raises ValidateError when there can be no result."""
    path = fetch_dataset(
        settings.dataset_uri,
        sha256=settings.dataset_sha256,
        cache_dir=settings.cache_dir,
        timeout_seconds=settings.download_timeout_seconds,
        max_bytes=settings.download_max_bytes,
        retries=settings.download_retries,
    )
    dataset = read_dataset(path, settings.dataset_format, settings.label_column, settings.max_rows)
    log.info("dataset %s: %d rows", settings.dataset_uri, dataset.rows)
    roles = [("candidate", settings.candidate_url)]
    if settings.stable_url is not None:
        roles.append(("stable", settings.stable_url))
    scores: dict[str, float | None] = {"candidate": None, "stable": None}
    with httpx.Client(timeout=settings.request_timeout_seconds) as client:
        endpoints = [
            Endpoint(role, url, client, settings.request_retries, settings.batch_rows)
            for role, url in roles
        ]
        # Every check that needs no prediction comes first: a bad metric or feature count
        # fails before thousands of rows are sent.
        plans = []
        for endpoint in endpoints:
            info = endpoint.metadata()
            check_metric_fits(settings.metric, info, endpoint.role)
            plans.append((endpoint, info, features_for(dataset, info, endpoint.role)))
        for endpoint, info, features in plans:
            predictions = endpoint.predict(info, features, needs_probabilities(settings.metric))
            scores[endpoint.role] = score(
                settings.metric, info, dataset.labels, predictions, endpoint.role
            )
            log.info("%s %s: %s", endpoint.role, settings.metric, scores[endpoint.role])
    return {"metric": settings.metric, **scores, "rows": dataset.rows}


def features_for(dataset: Dataset, info: ModelInfo, role: str) -> npt.NDArray[np.float64]:
    """The rows as the model takes them: the model's named features where the dataset has
    them all, else every column but the label in file order."""
    names = [column.name for column in dataset.columns]
    model_names = info.feature_names or []
    chosen = model_names if model_names and set(model_names) <= set(names) else names
    if len(chosen) != info.n_features:
        hint = ""
        if model_names:
            missing = [name for name in model_names if name not in names]
            hint = f"; columns named after its features are missing: {_listed(missing)}"
        raise ValidateError(
            "model",
            f"the dataset has {len(names)} feature columns (every column but the label "
            f"{dataset.label_column!r}), and the {role} model takes {info.n_features} "
            f"features{hint}",
        )
    columns = [dataset.column(name) for name in chosen]
    for column in columns:
        if column.problem is not None:
            raise ValidateError(
                "dataset",
                f"feature column {column.name!r} is not numeric: {column.problem}; the model "
                "takes numbers only, so encode the column as numbers or leave it out",
            )
    return np.column_stack([column.values for column in columns])


def _listed(names: list[str]) -> str:
    return ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")


def report(line: dict[str, Any], termination_log: Path, always_write: bool) -> None:
    """One JSON line on stdout and in the termination log (read by the operator)."""
    text = json.dumps(line, allow_nan=False)
    if always_write or termination_log.exists():
        try:
            termination_log.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            log.error("cannot write the termination log %s: %s", termination_log, error)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def error_line(kind: str, message: str) -> dict[str, Any]:
    one_line = " ".join(message.split())
    if len(one_line) > _MESSAGE_LIMIT:
        one_line = one_line[: _MESSAGE_LIMIT - 3] + "..."
    return {"error": one_line, "kind": kind}


def main(argv: list[str]) -> NoReturn:
    try:
        settings = CliApp.run(ValidateSettings, cli_args=argv)
    except (ValidationError, SettingsError) as error:
        report(error_line("config", _invalid(error)), DEFAULT_TERMINATION_LOG, always_write=False)
        sys.stderr.write(f"modelserver validate: {_invalid(error)}\n")
        sys.exit(1)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per request at info would bury the few lines that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    always_write = "termination_log" in settings.model_fields_set
    try:
        result = run(settings)
    except ValidateError as error:
        report(error_line(error.kind, error.message), settings.termination_log, always_write)
        sys.stderr.write(f"modelserver validate: {error.message}\n")
        sys.exit(1)
    report(result, settings.termination_log, always_write)
    sys.exit(0)


def _invalid(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{_flag(problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        return f"invalid arguments: {problems}"
    return f"invalid arguments: {error}"


def _flag(location: tuple[int | str, ...]) -> str:
    """The flag a field is set with; cross-field problems have no field."""
    return "--" + str(location[0]).replace("_", "-") if location else "arguments"
