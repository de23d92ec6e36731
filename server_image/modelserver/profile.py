"""The reference profile of a model (docs/server.md, "Reference profile"): versioned JSON
with each feature's bins and training proportions, the model's output distribution on
that data and, given labels, its reference quality.

`modelserver profile` writes one (profile_build.py); the server loads it, refuses one
that does not fit its model, and counts live traffic in the same bins.
"""

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelserver.fatal import StartupError
from modelserver.model import Model
from modelserver.profile_bins import category_bin_names, quantile_bin_names
from modelserver.sources import fetch_model, verify_sha256

PROFILE_SCHEMA_VERSION = 1
MAX_BINS = 100
"""Most bins of one feature or output, so that a profile cannot blow up the number of
Prometheus series."""
_PROPORTION_TOLERANCE = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_proportions(bins: list[str], proportions: list[float]) -> None:
    if len(proportions) != len(bins):
        raise ValueError(f"{len(bins)} bins but {len(proportions)} proportions")
    if any(not 0.0 <= share <= 1.0 for share in proportions):
        raise ValueError("proportions must lie between 0 and 1")
    total = sum(proportions)
    if total > 0 and abs(total - 1.0) > _PROPORTION_TOLERANCE:
        raise ValueError(f"proportions sum to {total}, not 1")


class QuantileBins(_Strict):
    """Bins between `edges` (bin i: edges[i-1] <= v < edges[i]), then `missing`."""

    kind: Literal["quantile"] = "quantile"
    edges: list[float] = Field(max_length=MAX_BINS - 1)
    bins: list[str]
    """The names the server gives these bins in its `bin` label, in order."""
    proportions: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> "QuantileBins":
        if any(not math.isfinite(edge) for edge in self.edges):
            raise ValueError("edges must be finite numbers")
        if any(low >= high for low, high in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly ascending")
        if self.bins != quantile_bin_names(self.edges):
            raise ValueError(f"bins must be {quantile_bin_names(self.edges)}")
        _check_proportions(self.bins, self.proportions)
        return self


class CategoryBins(_Strict):
    """One bin per value in `values`, then `other` and `missing`."""

    kind: Literal["categories"] = "categories"
    values: list[float] = Field(max_length=MAX_BINS - 2)
    """The values the model receives for each category (codes, for text columns)."""
    labels: list[str] | None = None
    """The text of each category, for a column that held text."""
    bins: list[str]
    proportions: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> "CategoryBins":
        if any(not math.isfinite(value) for value in self.values):
            raise ValueError("category values must be finite numbers")
        if len(set(self.values)) != len(self.values):
            raise ValueError("category values must be distinct")
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.values)} values but {len(self.labels)} labels")
        if self.bins != category_bin_names(len(self.values)):
            raise ValueError(f"bins must be {category_bin_names(len(self.values))}")
        _check_proportions(self.bins, self.proportions)
        return self


Binning = Annotated[QuantileBins | CategoryBins, Field(discriminator="kind")]


class FeatureProfile(_Strict):
    name: str = Field(min_length=1)
    binning: Binning


class ClassBins(_Strict):
    """Predicted-class frequencies: one bin per class in `classes`, then `other`."""

    classes: list[bool | int | float | str] = Field(min_length=1, max_length=MAX_BINS - 1)
    bins: list[str]
    proportions: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> "ClassBins":
        expected = [*(str(label) for label in self.classes), "other"]
        if self.bins != expected:
            raise ValueError(f"bins must be {expected}")
        _check_proportions(self.bins, self.proportions)
        return self


class OutputProfile(_Strict):
    classes: ClassBins | None = None
    """Classifiers: the predicted classes."""
    score: QuantileBins | None = None
    """Classifiers with probabilities: the positive-class probability (binary) or the
    predicted class's probability (multiclass); regressors: the predicted value."""


class Quality(_Strict):
    """The model's quality on the profile's data (its labels)."""

    rows: int = Field(ge=1)
    accuracy: float | None = None
    auc: float | None = None
    """Binary classifiers with probabilities, when both classes occur."""
    mae: float | None = None


class ModelIdentity(_Strict):
    sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    """The artifact the profile was built from; None when built from a model in memory."""
    format: str
    task: Literal["regression", "binary", "multiclass"]
    n_features: int = Field(ge=1)
    feature_names: list[str] | None = None
    classes: list[bool | int | float | str] | None = None


class Profile(_Strict):
    kind: Literal["modelserver-profile"] = "modelserver-profile"
    schema_version: int
    model: ModelIdentity
    rows: int = Field(ge=1)
    features: list[FeatureProfile]
    prediction: OutputProfile
    quality: Quality | None = None

    @model_validator(mode="after")
    def _one_profile_per_feature(self) -> "Profile":
        if self.schema_version != PROFILE_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this server reads"
                f" version {PROFILE_SCHEMA_VERSION}); build the profile again with this"
                " server's `modelserver profile`"
            )
        if len(self.features) != self.model.n_features:
            raise ValueError(
                f"{len(self.features)} feature profiles for a model of"
                f" {self.model.n_features} features"
            )
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        return self


def profile_json(profile: Profile) -> bytes:
    """The JSON of a profile, one line per feature: readable, and the same bytes for the
    same profile (so its sha256 can be pinned)."""
    document = profile.model_dump(mode="json")
    parts = []
    for key, value in document.items():
        if key == "features":
            lines = ",\n  ".join(json.dumps(feature) for feature in value)
            text = f"[\n  {lines}\n ]"
        else:
            text = json.dumps(value)
        parts.append(f" {json.dumps(key)}: {text}")
    return ("{\n" + ",\n".join(parts) + "\n}\n").encode()


def write_profile(profile: Profile, path: Path) -> None:
    path.write_bytes(profile_json(profile))


def parse_profile(content: bytes, source: str) -> Profile:
    """A profile from its JSON, or a StartupError saying what is wrong with it."""
    try:
        return Profile.model_validate_json(content)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        shown = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'document'}: {problem['msg']}"
            for problem in problems[:3]
        )
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise StartupError(
            f"profile {source} is not a valid modelserver profile: {shown}{more}"
        ) from error


def check_profile_fits(profile: Profile, model: Model, model_sha256: str | None) -> None:
    """Raise StartupError unless the profile describes this model."""
    made_for = profile.model
    fix = "build the profile from this model: modelserver profile --model MODEL --data DATA"
    problems: list[str] = []
    if made_for.sha256 is not None and model_sha256 is not None and made_for.sha256 != model_sha256:
        problems.append(f"it was built from model sha256 {made_for.sha256}, this is {model_sha256}")
    if made_for.n_features != model.n_features:
        problems.append(
            f"it describes {made_for.n_features} features, the model takes {model.n_features}"
        )
    if made_for.task != str(model.task):
        problems.append(f"it describes a {made_for.task} model, this one is {model.task}")
    if model.feature_names is not None and made_for.feature_names is not None:
        mismatch = _first_difference(made_for.feature_names, model.feature_names)
        if mismatch is not None:
            problems.append(f"feature names differ: {mismatch}")
    if _comparable(made_for.classes) != _comparable(model.classes):
        problems.append(f"its classes are {made_for.classes}, the model's are {model.classes}")
    if problems:
        raise StartupError(f"the profile does not fit the model: {'; '.join(problems)}; {fix}")


def _comparable(classes: list[Any] | None) -> list[tuple[str, str]] | None:
    return None if classes is None else [(type(c).__name__, str(c)) for c in classes]


def _first_difference(profile_names: list[str], model_names: list[str]) -> str | None:
    for position, (ours, theirs) in enumerate(zip(profile_names, model_names, strict=False)):
        if ours != theirs:
            return f"feature {position} is {ours!r} in the profile, {theirs!r} in the model"
    if len(profile_names) != len(model_names):
        return f"{len(profile_names)} names in the profile, {len(model_names)} in the model"
    return None


def load_profile(
    uri: str,
    *,
    sha256: str | None,
    cache_dir: Path,
    timeout_seconds: float,
    max_bytes: int,
    retries: int,
) -> tuple[Profile, Path, str]:
    """Fetch and verify a profile like a model artifact; return it, its local path and
    its sha256."""
    path = fetch_model(
        uri,
        cache_dir=cache_dir,
        expected_sha256=sha256,
        timeout_seconds=timeout_seconds,
        max_bytes=max_bytes,
        retries=retries,
        artifact="profile",
    )
    digest = verify_sha256(path, sha256)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise StartupError(f"cannot read profile {path}: {error}") from error
    return parse_profile(content, uri), path, digest
