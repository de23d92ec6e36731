"""Fetch, verify, load and warm up the configured model."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserver.fatal import StartupError
from modelserver.model import Model, Prediction, TableModel, model_columns
from modelserver.profile import Profile, check_profile_fits, load_profile
from modelserver.settings import Settings
from modelserver.sources import fetch_model, verify_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: Model
    path: Path
    """The verified local copy of the artifact."""
    sha256: str
    load_seconds: float
    warm_up_prediction: Prediction
    """Shows the output datatypes and shapes for the metadata endpoint."""
    profile: Profile | None = None
    """The reference profile, checked against the model, when one is configured."""
    profile_path: Path | None = None
    """Its verified local copy."""
    profile_sha256: str | None = None


def load_configured_model(settings: Settings) -> LoadedModel:
    """Everything between a URI and a model that has answered one prediction."""
    started = time.perf_counter()
    path = fetch_model(
        settings.model_uri,
        cache_dir=settings.cache_dir,
        expected_sha256=settings.model_sha256,
        timeout_seconds=settings.download_timeout_seconds,
        max_bytes=settings.download_max_bytes,
        retries=settings.download_retries,
    )
    sha256 = verify_sha256(path, settings.model_sha256)
    model = _load(settings, path)
    warm_up_prediction = warm_up(model)
    profile, profile_path, profile_sha256 = None, None, None
    if settings.profile_uri:
        profile, profile_path, profile_sha256 = load_profile(
            settings.profile_uri,
            sha256=settings.profile_sha256,
            cache_dir=settings.cache_dir,
            timeout_seconds=settings.download_timeout_seconds,
            max_bytes=settings.download_max_bytes,
            retries=settings.download_retries,
        )
        _check_profile_counts(model)
        check_profile_fits(profile, model, sha256)
    seconds = time.perf_counter() - started
    log.info(
        "loaded %s model %s (%s, %d features) in %.2fs",
        model.format,
        settings.model_name,
        model.task,
        model.n_features,
        seconds,
    )
    return LoadedModel(
        model, path, sha256, seconds, warm_up_prediction, profile, profile_path, profile_sha256
    )


def _load(settings: Settings, path: Path) -> Model:
    # Libraries are imported here, after the artifact is fetched and verified: importing
    # xgboost and scikit-learn takes seconds, and a bad URI or digest should fail at once.
    try:
        if settings.model_format == "xgboost":
            from modelserver.xgboost_model import load_xgboost

            return load_xgboost(path, settings.predict_threads)
        from modelserver.sklearn_model import load_joblib, load_skops

        if settings.model_format == "sklearn":
            return load_skops(path, settings.skops_trusted_types)
        return load_joblib(path)
    except StartupError:
        raise
    except Exception as error:  # a file that is not what the format says can raise anything
        raise StartupError(
            f"cannot load {settings.model_format} model {path}: {type(error).__name__}: {error}"
        ) from error


def warm_up(model: Model) -> Prediction:
    """Ready means a prediction has succeeded, not only that a file was read."""
    columns = model_columns(model)
    try:
        if columns is not None and columns.frame:
            from modelserver.frames import example_table

            return table_model(model).predict_frame(example_table(columns, model.input_dtype))
        return model.predict(np.zeros((1, model.n_features), dtype=model.input_dtype))
    except Exception as error:
        raise StartupError(f"model failed its warm-up prediction: {error}") from error


def table_model(model: Model) -> TableModel:
    """The model as one that predicts DataFrames (its columns say it does)."""
    assert hasattr(model, "predict_frame"), "a model with columns.frame predicts DataFrames"
    return model  # type: ignore[return-value]


def _check_profile_counts(model: Model) -> None:
    """Profiles bin rows of numbers; a model that takes a DataFrame gets none."""
    columns = model_columns(model)
    if columns is not None and columns.frame:
        raise StartupError(
            "a reference profile is not supported for a model that takes a DataFrame (named"
            f" columns: {', '.join(columns.names)}); serve it without MODELSERVER_PROFILE_URI"
        )
