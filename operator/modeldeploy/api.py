"""The ModelDeployment API (modeldeploy.dev/v1alpha1): the one source of the CRD schema.

Every cross-field rule exists twice on purpose: as a pydantic validator, so the operator
and `modeldeploy` tooling reject bad objects with a clear message, and as a CEL rule in
`x-kubernetes-validations`, so the API server rejects them before they are stored.
`tests/unit/test_api.py` checks both against the same invalid examples.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md"]
CATEGORIES = ["all", "modeldeploy"]
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SHA256_PATTERN = r"^[a-fA-F0-9]{64}$"
URI_PATTERN = r"^(file:///.+|https?://[^/\s]+.*|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+)$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"

Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    Field(json_schema_extra={"format": "duration"}),
]
Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def duration_seconds(value: str) -> float:
    """Seconds in a duration such as `30s`, `5m`, `1m30s` or `250ms`."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 1h or 250ms")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value))


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _within(at_least: str | None, at_most: str | None) -> Callable[[str], str]:
    def check(value: str) -> str:
        seconds = duration_seconds(value)
        if at_least is not None and seconds < duration_seconds(at_least):
            raise ValueError(f"must be at least {at_least}")
        if at_most is not None and seconds > duration_seconds(at_most):
            raise ValueError(f"must be at most {at_most}")
        return value

    return check


def _duration_rules(at_least: str | None, at_most: str | None) -> dict[str, Any]:
    rules = []
    if at_least is not None:
        rules.append(
            cel(f"duration(self) >= duration('{at_least}')", f"must be at least {at_least}")
        )
    if at_most is not None:
        rules.append(cel(f"duration(self) <= duration('{at_most}')", f"must be at most {at_most}"))
    return {"format": "duration", **validations(*rules)}


# Durations that time something the operator waits for: below a second, a spec would make
# it requeue, query and write status in a hot loop.
TimerDuration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within("1s", None)),
    Field(json_schema_extra=_duration_rules("1s", None)),
]
# One query may hold a reconcile slot this long at most.
QueryTimeout = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within("1s", "60s")),
    Field(json_schema_extra=_duration_rules("1s", "60s")),
]
DrainDelay = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within(None, "60s")),
    Field(json_schema_extra=_duration_rules(None, "60s")),
]


class AddedLater:
    """Marks a pod-shaping field added after the API was first released.

    A revision hashes the pod-shaping spec with its defaults; such a field joins the hash
    only when it is set to something other than its default, so objects stored before it
    existed keep their revision and an operator upgrade starts no canary.
    """


class ApiModel(BaseModel):
    """Base of spec objects: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )


class StatusModel(BaseModel):
    """Base of status objects: tolerant of fields written by newer operators."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=True,
    )


# --- spec -------------------------------------------------------------------------------


class ModelFormat(StrEnum):
    XGBOOST = "xgboost"
    SKLEARN = "sklearn"
    SKLEARN_JOBLIB = "sklearn-joblib"


# Rules read optional fields through has(): the API server also checks them against
# defaults that have not been filled in yet.
_SHA_FOR_HTTP_RULE = (
    "!self.uri.startsWith('http') || has(self.sha256) "
    "|| (has(self.allowUnpinned) && self.allowUnpinned)"
)
_UNSAFE_FORMAT_RULE = (
    "!has(self.format) || self.format != 'sklearn-joblib' "
    "|| (has(self.allowUnsafeFormat) && self.allowUnsafeFormat)"
)


_PROFILE_SHA_MESSAGE = (
    "model.profile.sha256 is required for http(s) URIs; pin the profile's digest "
    "(sha256sum profile.json) or set model.allowUnpinned: true"
)
_PROFILE_SHA_RULE = (
    "!has(self.profile) || !self.profile.uri.startsWith('http') || has(self.profile.sha256) "
    "|| (has(self.allowUnpinned) && self.allowUnpinned)"
)


class ProfileSpec(ApiModel):
    uri: Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=2048)] = Field(
        description=(
            "Where the profile JSON (`modelserver profile`) lives: file:///path, "
            "http(s)://host/path, or pvc://claim-name/path/in/volume (mounted read-only)."
        ),
        json_schema_extra=validations(
            cel(
                "self.matches('^(file|https?|pvc)://')",
                "model.profile.uri must start with file://, http://, https:// or pvc://",
            )
        ),
    )
    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)] | None = Field(
        default=None,
        description=(
            "SHA-256 of the profile (64 hex characters); the server refuses a mismatch. "
            "Required for http(s) unless model.allowUnpinned."
        ),
    )


class ModelSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                _SHA_FOR_HTTP_RULE,
                "model.sha256 is required for http(s) URIs; pin the artifact's digest "
                "or set model.allowUnpinned: true",
                ".sha256",
            ),
            cel(_PROFILE_SHA_RULE, _PROFILE_SHA_MESSAGE, ".profile"),
            cel(
                _UNSAFE_FORMAT_RULE,
                "model.format sklearn-joblib loads a pickle, which runs code; "
                "set model.allowUnsafeFormat: true to accept that, or use format sklearn (skops)",
                ".allowUnsafeFormat",
            ),
        )
    )

    name: Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN, max_length=63)] = Field(
        description="Name the model is served under: /v2/models/{name} and /v1/models/{name}.",
    )
    version: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(
        description="Version of the model, shown in status and metrics (e.g. 2.1.0).",
    )
    uri: Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=2048)] = Field(
        description=(
            "Where the artifact lives: file:///path, http(s)://host/path, or "
            "pvc://claim-name/path/in/volume (mounted read-only into the pod)."
        ),
        json_schema_extra=validations(
            cel(
                "self.matches('^(file|https?|pvc)://')",
                "model.uri must start with file://, http://, https:// or pvc://",
            )
        ),
    )
    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)] | None = Field(
        default=None,
        description="SHA-256 of the artifact (64 hex characters); the server refuses a mismatch.",
    )
    format: ModelFormat = Field(
        default=ModelFormat.XGBOOST,
        description=(
            "Artifact format: xgboost (native JSON/UBJ), sklearn (skops, safe loading) or "
            "sklearn-joblib (pickle; runs code on load, needs allowUnsafeFormat)."
        ),
    )
    allow_unsafe_format: bool = Field(
        default=False,
        description="Accept the sklearn-joblib format, whose loading executes code.",
    )
    allow_unpinned: bool = Field(
        default=False,
        description="Accept an http(s) artifact (model or profile) without a sha256 pin.",
    )
    profile: Annotated[ProfileSpec | None, AddedLater()] = Field(
        default=None,
        description=(
            "The model's reference profile: bins and training shares of its inputs and "
            "outputs (docs/analysis.md). The server counts live rows per bin with it; "
            "feature drift and monitoring need it."
        ),
    )

    @model_validator(mode="after")
    def _check_pins(self) -> ModelSpec:
        if self.uri.startswith("http") and self.sha256 is None and not self.allow_unpinned:
            raise ValueError(
                "model.sha256 is required for http(s) URIs; pin the artifact's digest "
                "or set model.allowUnpinned: true"
            )
        profile = self.profile
        if (
            profile is not None
            and profile.uri.startswith("http")
            and profile.sha256 is None
            and not self.allow_unpinned
        ):
            raise ValueError(_PROFILE_SHA_MESSAGE)
        if self.format == ModelFormat.SKLEARN_JOBLIB and not self.allow_unsafe_format:
            raise ValueError(
                "model.format sklearn-joblib loads a pickle, which runs code; "
                "set model.allowUnsafeFormat: true to accept that, or use format sklearn (skops)"
            )
        return self


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Maximum resources, e.g. {memory: 2Gi}."
    )


class EnvVar(ApiModel):
    # Bounded so that the API server can afford the CEL rule over every name.
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="Name of the environment variable."
    )
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Toleration(ApiModel):
    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


# Variables the operator sets on every server container; users may not override them.
OPERATOR_ENV = (
    "MODELSERVER_MODEL_URI",
    "MODELSERVER_MODEL_FORMAT",
    "MODELSERVER_MODEL_NAME",
    "MODELSERVER_MODEL_VERSION",
    "MODELSERVER_MODEL_SHA256",
    "MODELSERVER_ALLOW_UNPINNED",
    "MODELSERVER_ALLOW_UNSAFE_FORMATS",
    "MODELSERVER_WORKERS",
    "MODELSERVER_TRACK",
    "MODELSERVER_DEPLOYMENT",
    "MODELSERVER_NAMESPACE",
    "MODELSERVER_PORT",
    "MODELSERVER_GRPC_PORT",
    "MODELSERVER_CACHE_DIR",
    "MODELSERVER_PROFILE_URI",
    "MODELSERVER_PROFILE_SHA256",
    "MODELSERVER_FEEDBACK_KEY_FILE",
    "MODELSERVER_FEEDBACK_KEY",
    "MODELSERVER_MIRROR_CONFIG_FILE",
    "MODELSERVER_VARIANT",
)
_RESERVED_ENV_MESSAGE = (
    "server.env may not set variables the operator sets (" + ", ".join(OPERATOR_ENV) + "), "
    "in any letter case; use the matching spec field instead"
)
_RESERVED_ENV_RULE = (
    "self.all(e, !(e.name.upperAscii() in [" + ", ".join(f"'{n}'" for n in OPERATOR_ENV) + "]))"
)


class ServerSpec(ApiModel):
    image: str | None = Field(
        default=None,
        description="Inference server image; defaults to the operator's configured image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the server container."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Resources of the server container.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables of the server container.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **validations(cel(_RESERVED_ENV_RULE, _RESERVED_ENV_MESSAGE)),
        },
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the server pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the server pods tolerate."
    )
    workers: int | None = Field(
        default=None, ge=1, le=64, description="Server worker processes; default chosen by server."
    )
    startup_timeout: Duration = Field(
        default="300s",
        description="How long a pod may take to download and load the model before restarting.",
    )
    drain_delay: Annotated[DrainDelay, AddedLater()] = Field(
        default="5s",
        description=(
            "How long a stopping pod keeps serving (a preStop sleep) while its removal from "
            "the Service's endpoints reaches every node; 0s turns the wait off."
        ),
    )

    @field_validator("env")
    @classmethod
    def _no_reserved_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        if any(e.name.upper() in OPERATOR_ENV for e in env):
            raise ValueError(_RESERVED_ENV_MESSAGE)
        names = [e.name for e in env]
        if len(names) != len(set(names)):
            raise ValueError("server.env lists a variable twice")
        return env


class TrafficRouter(StrEnum):
    REPLICAS = "replicas"
    GATEWAY_API = "gatewayAPI"


class ParentReference(ApiModel):
    name: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Name of the Gateway."
    )
    namespace: str | None = Field(
        default=None, description="Namespace of the Gateway; defaults to the route's namespace."
    )
    section_name: str | None = Field(default=None, description="Listener name on the Gateway.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Listener port.")


class GatewayAPITraffic(ApiModel):
    parent_refs: list[ParentReference] = Field(
        min_length=1, description="Gateways the HTTPRoute attaches to."
    )
    hostnames: list[str] = Field(default_factory=list, description="Hostnames the route serves.")
    path_prefix: str = Field(
        default="/", description="Path prefix the route matches (all model paths by default)."
    )


_GATEWAY_BLOCK_RULE = "(has(self.router) && self.router == 'gatewayAPI') == has(self.gatewayAPI)"
_GATEWAY_BLOCK_MESSAGE = "traffic.gatewayAPI must be set exactly when traffic.router is gatewayAPI"


class TrafficSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_GATEWAY_BLOCK_RULE, _GATEWAY_BLOCK_MESSAGE))
    )

    router: TrafficRouter = Field(
        default=TrafficRouter.REPLICAS,
        description=(
            "How traffic is split: replicas (canary share of ready pods behind one Service; "
            "no mesh needed) or gatewayAPI (weighted HTTPRoute backendRefs)."
        ),
    )
    gateway_api: GatewayAPITraffic | None = Field(
        default=None,
        alias="gatewayAPI",
        description="HTTPRoute settings; required exactly when router is gatewayAPI.",
    )

    @model_validator(mode="after")
    def _gateway_block_matches_router(self) -> TrafficSpec:
        if (self.router == TrafficRouter.GATEWAY_API) != (self.gateway_api is not None):
            raise ValueError(_GATEWAY_BLOCK_MESSAGE)
        return self


_STEPS_RULE = "self.isSorted() && self.all(x, self.exists_one(y, y == x))"
_STEPS_MESSAGE = "rollout.steps must be strictly increasing, each within 1..100"


class RolloutSpec(ApiModel):
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default=[10, 25, 50],
        min_length=1,
        max_length=20,
        description="Canary traffic percentages, walked in order; promotion follows the last.",
        json_schema_extra=validations(cel(_STEPS_RULE, _STEPS_MESSAGE)),
    )
    interval: TimerDuration = Field(
        default="60s", description="Time between analyses; each Pass advances one step."
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Failed analyses before an automatic rollback."
    )
    inconclusive_limit: int = Field(
        default=5,
        ge=1,
        le=1000,
        description=(
            "Consecutive inconclusive analyses (too little traffic, metrics backend errors) "
            "before a rollback with reason AnalysisInconclusive."
        ),
    )
    progress_deadline: TimerDuration = Field(
        default="600s",
        description="Canary pods must be ready within this time, else the canary is rolled back.",
    )
    paused: bool = Field(
        default=False, description="Hold the canary at its current step; analysis still runs."
    )

    @field_validator("steps")
    @classmethod
    def _steps_strictly_increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(_STEPS_MESSAGE)
        return steps


class SecretKeyRef(ApiModel):
    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        description="Name of a Secret in the ModelDeployment's namespace."
    )
    key: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Key within the Secret."
    )


_URL_NO_QUERY_MESSAGE = (
    "analysis.prometheus.url must be a base URL without a query string or fragment, "
    "e.g. http://prometheus.monitoring:9090 (the operator appends /api/v1/query)"
)
_URL_USERINFO_MESSAGE = (
    "analysis.prometheus.url must not carry a user name or password; "
    "use bearerTokenSecretRef for credentials"
)
_URL_PORT_MESSAGE = "analysis.prometheus.url must be an http(s) URL whose port is within 1..65535"
_URL_PORT_RULE = (
    "isURL(self) && (url(self).getPort() == '' || "
    "(int(url(self).getPort()) >= 1 && int(url(self).getPort()) <= 65535))"
)


def prometheus_url_problem(url: str) -> str | None:
    if "?" in url or "#" in url:
        return _URL_NO_QUERY_MESSAGE
    if "@" in url:
        return _URL_USERINFO_MESSAGE
    try:
        port = urlsplit(url).port
    except ValueError:
        return _URL_PORT_MESSAGE
    return _URL_PORT_MESSAGE if port == 0 else None


class PrometheusSpec(ApiModel):
    url: Annotated[str, StringConstraints(pattern=r"^https?://.+", max_length=2048)] = Field(
        description=(
            "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090; "
            "no query string, fragment or credentials."
        ),
        json_schema_extra=validations(
            cel("!self.contains('?') && !self.contains('#')", _URL_NO_QUERY_MESSAGE),
            cel("!self.contains('@')", _URL_USERINFO_MESSAGE),
            cel(_URL_PORT_RULE, _URL_PORT_MESSAGE),
        ),
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token sent with every query."
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the CA certificates (PEM, or one DER) to verify https.",
    )
    timeout: QueryTimeout = Field(default="10s", description="Timeout of one query (1s..60s).")

    @field_validator("url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        problem = prometheus_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class SLOSpec(ApiModel):
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest tolerated canary error ratio (0..1)."
    )
    max_latency_p99: Duration = Field(
        default="250ms", description="Highest tolerated canary p99 latency."
    )
    count_rejected_requests: bool = Field(
        default=True,
        description=(
            "Count 4xx (rejected inputs) as errors too: a model that rejects inputs the "
            "stable accepted is a regression."
        ),
    )


class MetricCheck(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.min) || has(self.max)", "a metric check needs min, max or both"),
            cel(
                "!has(self.min) || !has(self.max) || self.min <= self.max",
                "a metric check's min must not exceed its max",
            ),
        )
    )

    name: Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)] = Field(
        description="Name of the check, shown in status and events."
    )
    query: Annotated[str, StringConstraints(min_length=1)] = Field(
        description=(
            "PromQL returning one number; templated with {{ namespace }}, {{ name }}, "
            "{{ track }}, {{ interval }}, {{ model }} and {{ version }}."
        )
    )
    min: float | None = Field(default=None, description="Lowest passing value.")
    max: float | None = Field(default=None, description="Highest passing value.")

    @model_validator(mode="after")
    def _bounds(self) -> MetricCheck:
        if self.min is None and self.max is None:
            raise ValueError(f"metric check {self.name}: a metric check needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metric check {self.name}: min must not exceed max")
        return self


class BackendErrorPolicy(StrEnum):
    HOLD = "Hold"
    FAIL = "Fail"


# --- model-aware gates (docs/analysis.md) ------------------------------------------------


class DriftStatistic(StrEnum):
    PSI = "psi"
    KS = "ks"


DEFAULT_MAX_PSI = 0.2
DEFAULT_MAX_KS = 0.1
_KS_FRACTION_RULE = (
    "!has(self.statistic) || self.statistic != 'ks' || !has(self.max) || self.max <= 1.0"
)
_KS_FRACTION_MESSAGE = "a KS statistic lies within 0..1: write max as a fraction (0.1, not 10)"


class PredictionDriftSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_KS_FRACTION_RULE, _KS_FRACTION_MESSAGE, ".max"))
    )

    statistic: DriftStatistic = Field(
        default=DriftStatistic.PSI,
        description=(
            "psi (population stability index over the output bins) or ks (largest gap "
            "between the binned cumulative distributions; ordered bins only)."
        ),
    )
    max: float | None = Field(
        default=None,
        ge=0,
        description=(
            f"Highest passing value of the statistic; default {DEFAULT_MAX_PSI} for psi, "
            f"{DEFAULT_MAX_KS} for ks."
        ),
    )

    @model_validator(mode="after")
    def _ks_is_a_fraction(self) -> PredictionDriftSpec:
        if self.statistic == DriftStatistic.KS and self.max is not None and self.max > 1:
            raise ValueError(_KS_FRACTION_MESSAGE)
        return self

    def bound(self) -> float:
        """The highest passing value: `max`, or the statistic's default."""
        if self.max is not None:
            return self.max
        return DEFAULT_MAX_KS if self.statistic == DriftStatistic.KS else DEFAULT_MAX_PSI


class FeatureDriftSpec(ApiModel):
    max_psi: float = Field(
        default=DEFAULT_MAX_PSI,
        ge=0,
        alias="maxPSI",
        description="Highest passing PSI of any feature against the profile.",
    )
    worst_features: int = Field(
        default=5,
        ge=1,
        le=50,
        description="How many of the most drifted features status and events name.",
    )


_DRIFT_BLOCK_RULE = "has(self.prediction) || has(self.features)"
_DRIFT_BLOCK_MESSAGE = "drift needs prediction, features or both"


class DriftSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_DRIFT_BLOCK_RULE, _DRIFT_BLOCK_MESSAGE))
    )

    prediction: PredictionDriftSpec | None = Field(
        default=None,
        description=(
            "Bound on how far the outputs' distribution moved: in a rollout the canary's "
            "against the stable's in the same window; in monitoring the stable's against "
            "the profile's."
        ),
    )
    features: FeatureDriftSpec | None = Field(
        default=None,
        description=(
            "Bound on how far each input feature's distribution is from the profile's "
            "training shares; needs model.profile."
        ),
    )
    min_rows: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description=(
            "Fewer rows than this on either side of a comparison make the drift check "
            "NoData: on few rows PSI measures sampling noise."
        ),
    )

    @model_validator(mode="after")
    def _something_to_judge(self) -> DriftSpec:
        if self.prediction is None and self.features is None:
            raise ValueError(_DRIFT_BLOCK_MESSAGE)
        return self


class ModelTask(StrEnum):
    """What the server reports in the `task` label of modelserver_model_info."""

    REGRESSION = "regression"
    BINARY = "binary"
    MULTICLASS = "multiclass"


_QUALITY_METRIC_RULE = "has(self.minAccuracy) || has(self.minAUC) || has(self.maxMAE)"
_QUALITY_KIND_RULE = "!has(self.maxMAE) || !(has(self.minAccuracy) || has(self.minAUC))"
_QUALITY_KIND_MESSAGE = (
    "minAccuracy and minAUC judge classifiers, maxMAE judges regressors: set one kind"
)


def _quality_rules(block: str, drop: str) -> dict[str, Any]:
    return validations(
        cel(
            _QUALITY_METRIC_RULE,
            f"{block} needs minAccuracy, minAUC or maxMAE ({drop} compares the metrics they "
            "name; write minAccuracy: 0 to judge accuracy by the drop alone)",
        ),
        cel(_QUALITY_KIND_RULE, f"{block}: {_QUALITY_KIND_MESSAGE}"),
        cel(
            f"has(self.maxMAE) || !has(self.{drop}) || self.{drop} <= 1.0",
            f"{block}.{drop} of accuracy or AUC is a fraction: write 0.02, not 2",
            f".{drop}",
        ),
    )


class QualityBounds(ApiModel):
    """Bounds on the live quality measured from ground-truth feedback."""

    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest passing share of correct predictions (classifiers).",
    )
    min_auc: float | None = Field(
        default=None,
        ge=0,
        le=1,
        alias="minAUC",
        description=(
            "Lowest passing ROC AUC from the score histograms by true label (binary "
            "classifiers only; any other model makes the check Error)."
        ),
    )
    max_mae: float | None = Field(
        default=None,
        ge=0,
        alias="maxMAE",
        description="Highest passing mean absolute error, in the output's units (regressors).",
    )
    min_feedback: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Fewest labelled rows in the window for quality to be judged.",
    )

    def _check_bounds(self, block: str, drop: str, drop_value: float | None) -> None:
        if self.min_accuracy is None and self.min_auc is None and self.max_mae is None:
            raise ValueError(
                f"{block} needs minAccuracy, minAUC or maxMAE ({drop} compares the metrics "
                "they name; write minAccuracy: 0 to judge accuracy by the drop alone)"
            )
        if self.max_mae is not None and (self.min_accuracy is not None or self.min_auc is not None):
            raise ValueError(f"{block}: {_QUALITY_KIND_MESSAGE}")
        if self.max_mae is None and drop_value is not None and drop_value > 1:
            raise ValueError(f"{block}.{drop} of accuracy or AUC is a fraction: write 0.02, not 2")

    def task_problem(self, task: str) -> str | None:
        """Why these bounds cannot judge a model of `task` (modelserver_model_info), if so.

        The API server cannot know the model's task, so this is checked at run time.
        """
        if self.min_auc is not None and task != ModelTask.BINARY:
            return (
                f"minAUC judges binary classifiers only, and the model is {_task_name(task)}: "
                "use minAccuracy (classifiers) or maxMAE (regressors) instead"
            )
        if self.min_accuracy is not None and task == ModelTask.REGRESSION:
            return "minAccuracy judges classifiers, and the model is a regressor: use maxMAE"
        if self.max_mae is not None and task != ModelTask.REGRESSION:
            return (
                f"maxMAE judges regressors, and the model is {_task_name(task)}: "
                "use minAccuracy or minAUC"
            )
        return None


def _task_name(task: str) -> str:
    names: dict[str, str] = {
        ModelTask.REGRESSION: "a regressor",
        ModelTask.BINARY: "a binary classifier",
        ModelTask.MULTICLASS: "a multi-class classifier",
    }
    return names.get(task, f"of unknown task {task!r}")


class QualitySpec(QualityBounds):
    model_config = ConfigDict(
        json_schema_extra=_quality_rules("analysis.quality", "maxDropVsStable")
    )

    max_drop_vs_stable: float | None = Field(
        default=None,
        ge=0,
        description=(
            "How much worse than the stable's in the same window the canary's quality may "
            "be: a fall of accuracy or AUC, a rise of MAE, in the metric's units."
        ),
    )
    feedback_deadline: TimerDuration = Field(
        default="1h",
        description=(
            "While fewer than minFeedback labelled rows arrived, the quality check holds the "
            "step without counting toward rollout.inconclusiveLimit, for this long from the "
            "step's start; after that it counts as inconclusive."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> QualitySpec:
        self._check_bounds("analysis.quality", "maxDropVsStable", self.max_drop_vs_stable)
        return self


class AnalysisSpec(ApiModel):
    prometheus: PrometheusSpec | None = Field(
        default=None, description="Prometheus to query; defaults to the operator's configured one."
    )
    min_requests: int = Field(
        default=20,
        ge=0,
        description="Fewer canary requests in an interval make the analysis NoData, not a failure.",
    )
    slo: SLOSpec = Field(default_factory=SLOSpec, description="Built-in error-rate and p99 checks.")
    metrics: list[MetricCheck] = Field(
        default_factory=list, max_length=20, description="Extra checks written in PromQL."
    )
    backend_errors: BackendErrorPolicy = Field(
        default=BackendErrorPolicy.HOLD,
        description=(
            "What an unreachable metrics backend or a failing query means: Hold (inconclusive, "
            "the step is held) or Fail (counts as a failed check)."
        ),
    )
    drift: DriftSpec | None = Field(
        default=None,
        description=(
            "Judge the canary by what it predicts (against the stable) and on what inputs "
            "(against model.profile)."
        ),
    )
    quality: QualitySpec | None = Field(
        default=None,
        description=(
            "Judge the canary by how often it is right, from ground truth sent to the "
            "server's feedback endpoint."
        ),
    )


class WebhookSpec(ApiModel):
    url_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the webhook URL (Slack-compatible incoming webhook)."
    )


class NotificationSpec(ApiModel):
    webhook: WebhookSpec | None = Field(
        default=None, description="Posted on promotion, rollback and failed checks."
    )


# --- the offline champion-challenger check (docs/validation.md) ------------------------


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


class StrategyType(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blueGreen"
    DIRECT = "direct"
    SHADOW = "shadow"
    EXPERIMENT = "experiment"


_POST_PROMOTION_RULE = "duration(self.postPromotionAnalysis) <= duration(self.scaleDownDelay)"
_POST_PROMOTION_MESSAGE = (
    "strategy.blueGreen.postPromotionAnalysis must fit inside scaleDownDelay: the previous "
    "version is the switch-back target only while it is up"
)


class BlueGreenStrategy(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_POST_PROMOTION_RULE, _POST_PROMOTION_MESSAGE))
    )

    preview_replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Pods of the new version before the switch; default spec.replicas.",
    )
    preview_duration: Duration = Field(
        default="0s",
        description=(
            "How long the new version runs behind its preview Service (NAME-next) before "
            "the switch; with previewAnalysis, it also needs one passing analysis per "
            "rollout.interval of it (at least one)."
        ),
    )
    preview_analysis: bool = Field(
        default=False,
        description=(
            "Judge the preview traffic (e.g. your smoke tests against NAME-next) with the "
            "analysis every rollout.interval; without preview traffic, leave it off."
        ),
    )
    auto_promote: bool = Field(
        default=True,
        description="Switch by itself once the preview passed; false waits for a promote request.",
    )
    scale_down_delay: Duration = Field(
        default="10m",
        description=(
            "How long the previous version stays up after the switch, as the instant "
            "switch-back target."
        ),
    )
    post_promotion_analysis: Duration = Field(
        default="0s",
        description=(
            "How long live traffic on the new version is judged after the switch (an analysis "
            "every rollout.interval); a failure switches back. Must fit inside scaleDownDelay."
        ),
    )

    @model_validator(mode="after")
    def _post_promotion_fits(self) -> BlueGreenStrategy:
        if duration_seconds(self.post_promotion_analysis) > duration_seconds(self.scale_down_delay):
            raise ValueError(_POST_PROMOTION_MESSAGE)
        return self


class DirectStrategy(ApiModel):
    analysis_intervals: int = Field(
        default=3,
        ge=0,
        le=100,
        description=(
            "Analyses after the new version replaced stable (one per rollout.interval); all "
            "must pass, or the previous version is rolled back. 0: none."
        ),
    )


_SHADOW_KIND_RULE = "!(has(self.minAgreement) && has(self.maxMeanAbsDiff))"
_SHADOW_KIND_MESSAGE = (
    "strategy.shadow: minAgreement judges classifiers, maxMeanAbsDiff regressors: set one"
)


class ShadowStrategy(ApiModel):
    """The new revision first runs as a shadow: the stable's pods copy live requests to it
    and clients never see its answers."""

    model_config = ConfigDict(
        json_schema_extra=validations(cel(_SHADOW_KIND_RULE, _SHADOW_KIND_MESSAGE))
    )

    mirror_percent: float = Field(
        default=100,
        ge=0.01,
        le=100,
        description=(
            "Share of live requests the stable copies to the shadow (every 100/p-th request, "
            "not a random draw). Copies the stable cannot send at once are dropped and "
            "counted, never queued at the expense of live requests."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Shadow pods; default the stable's size times mirrorPercent (at least 1).",
    )
    analyses: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "Passing analyses (one per rollout.interval) the shadow needs before the follow-up "
            "strategy starts (type shadow: before it is promoted)."
        ),
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Classifiers: lowest share of mirrored rows for which the shadow predicts the "
            "class the stable answered."
        ),
    )
    max_mean_abs_diff: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Regressors: highest mean absolute difference between the shadow's and the "
            "stable's predicted values over the mirrored rows."
        ),
    )
    min_rows: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Compared rows per analysis below which the agreement check has no data.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ShadowStrategy:
        if self.min_agreement is not None and self.max_mean_abs_diff is not None:
            raise ValueError(_SHADOW_KIND_MESSAGE)
        return self


VARIANT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_VARIANTS = 4
CONTROL = "control"
"""The experiment arm the stable serves."""


class ExperimentVariant(ApiModel):
    name: Annotated[str, StringConstraints(pattern=VARIANT_NAME_PATTERN, max_length=20)] = Field(
        description=(
            "The variant's name: its Deployment and Service are NAME-v-VARIANT, its responses "
            "carry x-model-variant: VARIANT, and that header pins a request to it."
        )
    )
    model: ModelSpec = Field(description="The model the variant serves.")
    weight: int = Field(
        ge=1, le=99, description="Percent of live traffic the variant gets; control keeps the rest."
    )


class ExperimentQuality(StrEnum):
    ACCURACY = "accuracy"


_METRIC_KIND_RULE = (
    "(has(self.successQuery) && has(self.totalQuery) && !has(self.quality)) || "
    "(!has(self.successQuery) && !has(self.totalQuery) && has(self.quality))"
)
_METRIC_KIND_MESSAGE = (
    "strategy.experiment.metric: set successQuery and totalQuery (a business metric such as "
    "conversions), or quality (from ground-truth feedback), not both"
)


class ExperimentMetric(ApiModel):
    """What each arm is judged on: successes out of trials, both counted per arm."""

    model_config = ConfigDict(
        json_schema_extra=validations(cel(_METRIC_KIND_RULE, _METRIC_KIND_MESSAGE))
    )

    success_query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description=(
            "PromQL counting one arm's successes since the experiment started; {{ variant }} "
            "(control or the variant's name), {{ track }}, {{ interval }} (the time since all "
            "arms were ready), {{ namespace }} and {{ name }} are filled in per arm."
        ),
    )
    total_query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="PromQL counting the same arm's trials (requests), with the same placeholders.",
    )
    quality: ExperimentQuality | None = Field(
        default=None,
        description=(
            "accuracy: correct predictions out of the labelled rows of each arm, from the "
            "server's feedback counters (docs/analysis.md)."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ExperimentMetric:
        queries = (self.success_query is not None, self.total_query is not None)
        if not ((all(queries) and self.quality is None) or (not any(queries) and self.quality)):
            raise ValueError(_METRIC_KIND_MESSAGE)
        return self


_VARIANT_RULES = (
    cel(
        f"self.variants.all(v, v.name != '{CONTROL}')",
        f"strategy.experiment.variants: '{CONTROL}' names the stable's arm; pick another name",
    ),
    cel(
        "self.variants.all(a, self.variants.exists_one(b, b.name == a.name))",
        "strategy.experiment.variants: every variant needs a name of its own",
    ),
    cel(
        "self.variants.map(v, v.weight).sum() < 100",
        "strategy.experiment.variants: the weights must add up to less than 100, so that "
        "control keeps some traffic to compare with",
    ),
)


class ExperimentStrategy(ApiModel):
    """An A/B experiment: the stable (control) and up to four variants share live traffic by
    weight, and after `duration` each variant's success rate is compared with control's."""

    model_config = ConfigDict(json_schema_extra=validations(*_VARIANT_RULES))

    variants: list[ExperimentVariant] = Field(
        min_length=1, max_length=MAX_VARIANTS, description="The variants compared with control."
    )
    duration: TimerDuration = Field(
        default="1h", description="How long the arms share traffic before the verdict."
    )
    max_duration: TimerDuration | None = Field(
        default=None,
        description=(
            "While an arm has fewer than minSamples after duration, the experiment runs on "
            "until this long (default three times duration); then the arms short of samples "
            "end InsufficientData."
        ),
    )
    min_samples: int = Field(
        default=1000,
        ge=1,
        le=1_000_000_000,
        description="Fewest trials (requests) per arm, control included, for a verdict.",
    )
    metric: ExperimentMetric = Field(description="What the arms are compared on.")
    significance: float = Field(
        default=0.05,
        ge=0.0001,
        le=0.5,
        description=(
            "Largest Holm-corrected p-value that counts as a difference; the confidence "
            "intervals are at 1 - significance."
        ),
    )
    min_effect: float = Field(
        default=0,
        ge=0,
        le=1,
        description=(
            "Smallest absolute difference of success rates that matters: a significant "
            "difference below it is NoSignificantDifference."
        ),
    )

    @model_validator(mode="after")
    def _variants(self) -> ExperimentStrategy:
        names = [v.name for v in self.variants]
        if CONTROL in names:
            raise ValueError(_VARIANT_RULES[0]["message"])
        if len(set(names)) != len(names):
            raise ValueError(_VARIANT_RULES[1]["message"])
        if sum(v.weight for v in self.variants) >= 100:
            raise ValueError(_VARIANT_RULES[2]["message"])
        return self

    def max_duration_seconds(self) -> float:
        if self.max_duration is not None:
            return max(duration_seconds(self.max_duration), duration_seconds(self.duration))
        return 3 * duration_seconds(self.duration)


_STRATEGY_BLOCK_RULES = (
    cel(
        "!has(self.blueGreen) || (has(self.type) && self.type == 'blueGreen')",
        "strategy.blueGreen is set only with strategy.type blueGreen",
    ),
    cel(
        "!has(self.direct) || (has(self.type) && self.type == 'direct')",
        "strategy.direct is set only with strategy.type direct",
    ),
    cel(
        "(has(self.type) && self.type == 'experiment') == has(self.experiment)",
        "strategy.experiment is set exactly when strategy.type is experiment",
    ),
)


class StrategySpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=validations(*_STRATEGY_BLOCK_RULES))

    type: StrategyType = Field(
        default=StrategyType.CANARY,
        description=(
            "canary (traffic shifted step by step), blueGreen (the new version previewed at "
            "full size, then all traffic switched at once), direct (replaced in place, then "
            "judged), shadow (a mirrored copy of live traffic judged, then promoted) or "
            "experiment (variants share traffic with the stable and are compared with it; "
            "a new model is rolled out as a canary)."
        ),
    )
    blue_green: BlueGreenStrategy | None = Field(
        default=None, alias="blueGreen", description="Settings of the blueGreen strategy."
    )
    direct: DirectStrategy | None = Field(default=None, description="Settings of direct.")
    shadow: ShadowStrategy | None = Field(
        default=None,
        description=(
            "Run the new revision as a shadow first (any type; type shadow promotes it once "
            "the shadow passes). docs/operator.md explains mirroring and its checks."
        ),
    )
    experiment: ExperimentStrategy | None = Field(
        default=None,
        description=(
            "Settings of the experiment strategy (type experiment); docs/operator.md explains "
            "the statistics."
        ),
    )

    @model_validator(mode="after")
    def _block_matches_type(self) -> StrategySpec:
        if self.blue_green is not None and self.type != StrategyType.BLUE_GREEN:
            raise ValueError(_STRATEGY_BLOCK_RULES[0]["message"])
        if self.direct is not None and self.type != StrategyType.DIRECT:
            raise ValueError(_STRATEGY_BLOCK_RULES[1]["message"])
        if (self.type == StrategyType.EXPERIMENT) != (self.experiment is not None):
            raise ValueError(_STRATEGY_BLOCK_RULES[2]["message"])
        return self

    def blue_green_settings(self) -> BlueGreenStrategy:
        return self.blue_green or BlueGreenStrategy()

    def direct_settings(self) -> DirectStrategy:
        return self.direct or DirectStrategy()

    def shadows(self) -> bool:
        """Whether a new revision runs as a shadow before anything else."""
        return self.shadow is not None or self.type == StrategyType.SHADOW

    def shadow_settings(self) -> ShadowStrategy:
        return self.shadow or ShadowStrategy()


_AUTOSCALING_RULE = "self.minReplicas <= self.maxReplicas"
_AUTOSCALING_MESSAGE = "autoscaling.minReplicas must not exceed maxReplicas"


class AutoscalingSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_AUTOSCALING_RULE, _AUTOSCALING_MESSAGE))
    )

    min_replicas: int = Field(ge=1, le=1000, description="Fewest stable pods the HPA keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most stable pods the HPA makes.")
    target_cpu_utilization: int = Field(
        default=80,
        ge=1,
        le=100,
        alias="targetCPUUtilization",
        description="Average CPU use, % of requests, the HPA aims at.",
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(_AUTOSCALING_MESSAGE)
        return self


# --- monitoring without a rollout (docs/analysis.md) ------------------------------------

MonitoringInterval = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within("1m", "24h")),
    Field(json_schema_extra=_duration_rules("1m", "24h")),
]
SLOPeriod = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_within("1h", "2160h")),
    Field(json_schema_extra=_duration_rules("1h", "2160h")),
]


class MonitoringQualitySpec(QualityBounds):
    model_config = ConfigDict(
        json_schema_extra=_quality_rules("monitoring.quality", "maxDropVsReference")
    )

    max_drop_vs_reference: float | None = Field(
        default=None,
        ge=0,
        description=(
            "How much worse than the profile's reference quality (measured on its training "
            "labels) the stable's live quality may be, in the metric's units."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> MonitoringQualitySpec:
        self._check_bounds("monitoring.quality", "maxDropVsReference", self.max_drop_vs_reference)
        return self


class SLOComplianceSpec(ApiModel):
    objective: float = Field(
        default=0.99,
        ge=0.5,
        le=0.9999,
        description=(
            "Share of monitoring windows that should keep analysis.slo (maxErrorRate and "
            "maxLatencyP99), 0.5..0.9999; the error budget is the rest (1 would leave none)."
        ),
    )
    period: SLOPeriod = Field(
        default="168h",
        description=(
            "The period compliance and the error budget are counted over (1h..2160h); "
            "Prometheus must keep that much history."
        ),
    )


class MonitoringSpec(ApiModel):
    interval: MonitoringInterval = Field(
        default="5m",
        description=(
            "How often, and over what window, the stable is compared with the profile and "
            "its SLO checked (1m..24h)."
        ),
    )
    drift: DriftSpec | None = Field(
        default=None,
        description=(
            "Bounds on the stable's live inputs and outputs against model.profile; "
            "needs model.profile."
        ),
    )
    quality: MonitoringQualitySpec | None = Field(
        default=None,
        description="Bounds on the stable's live quality from ground-truth feedback.",
    )
    slo: SLOComplianceSpec = Field(
        default_factory=SLOComplianceSpec,
        description="How the stable's compliance with analysis.slo is counted.",
    )


_PROFILE_NEEDED_MESSAGE = (
    "analysis.drift and monitoring.drift need model.profile: the server counts inputs and "
    "outputs per bin only with a profile, and feature drift compares them with its training "
    "shares; set model.profile (modelserver profile writes one), or remove the drift block"
)
_PROFILE_NEEDED_RULE = (
    "has(self.model.profile) || ("
    "!(has(self.analysis) && has(self.analysis.drift)) "
    "&& !(has(self.monitoring) && has(self.monitoring.drift)))"
)


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(cel(_PROFILE_NEEDED_RULE, _PROFILE_NEEDED_MESSAGE))
    )

    model: ModelSpec = Field(description="The model to serve.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Serving pods of the stable track.")
    server: ServerSpec = Field(default_factory=ServerSpec, description="The inference server pods.")
    traffic: TrafficSpec = Field(
        default_factory=TrafficSpec, description="How traffic is split during a canary."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="Canary steps, pacing and deadlines."
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="How each canary step is judged."
    )
    notifications: NotificationSpec = Field(
        default_factory=NotificationSpec, description="Where rollout outcomes are announced."
    )
    strategy: StrategySpec = Field(
        default_factory=StrategySpec,
        description="How a new revision replaces the stable one: canary, blueGreen or direct.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description=(
            "A HorizontalPodAutoscaler sizes the stable track (spec.replicas is then "
            "ignored); canaries follow its size."
        ),
    )
    validation: ValidationSpec | None = Field(
        default=None,
        description=(
            "An offline check of a new revision against the stable on a labelled hold-out "
            "set, run as a Job before any live request reaches it (docs/validation.md)."
        ),
    )
    monitoring: MonitoringSpec | None = Field(
        default=None,
        description=(
            "Watch the stable without a rollout: drift against model.profile, live quality "
            "and SLO compliance, in status.drift and status.slo (docs/analysis.md)."
        ),
    )

    @model_validator(mode="after")
    def _profile_for_drift(self) -> ModelDeploymentSpec:
        monitored_drift = self.monitoring is not None and self.monitoring.drift is not None
        if self.model.profile is None and (self.analysis.drift is not None or monitored_drift):
            raise ValueError(_PROFILE_NEEDED_MESSAGE)
        return self


# --- status -----------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    EXPERIMENTING = "Experimenting"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    NO_DATA = "NoData"
    ERROR = "Error"


class Outcome(StrEnum):
    DEPLOYED = "Deployed"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    type: str = Field(description="Condition type: Available, Progressing, Ready, ...")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="Generation of the spec this condition was set for."
    )


class TrackTemplate(StatusModel):
    """What shapes a track's pods; its hash is the revision."""

    model: ModelSpec = Field(description="The model the track serves.")
    server: ServerSpec = Field(description="The server settings, with the image resolved.")


class StableStatus(StatusModel):
    revision: str = Field(description="Hash of the pod-shaping spec of the stable track.")
    template: TrackTemplate | None = Field(
        default=None,
        description="Pod-shaping spec of the stable track, kept so a canary can be undone.",
    )
    version: str = Field(description="Model version served by the stable track.")
    replicas: int = Field(default=0, description="Pods the stable Deployment has.")
    ready_replicas: int = Field(default=0, description="Ready pods of the stable track.")


class PreviousStatus(StableStatus):
    standby: bool = Field(
        default=False,
        description="Still runs in the stable Deployment, without traffic (blueGreen).",
    )
    until: datetime | None = Field(
        default=None, description="When the standby is scaled down (blueGreen scaleDownDelay)."
    )


class CanaryStatus(StatusModel):
    revision: str = Field(description="Hash of the pod-shaping spec of the canary track.")
    version: str = Field(description="Model version served by the canary track.")
    step: int = Field(default=0, description="Index into rollout.steps of the current step.")
    weight: int = Field(default=0, description="Desired canary traffic percentage now.")
    actual_weight: int | None = Field(
        default=None, description="Traffic percentage the router achieved (replica ratio)."
    )
    failed_checks: int = Field(default=0, description="Failed analyses so far.")
    inconclusive_checks: int = Field(
        default=0, description="Consecutive inconclusive analyses so far."
    )
    started_at: datetime = Field(description="When the canary started.")
    ready_at: datetime | None = Field(default=None, description="When canary pods became ready.")
    last_step_at: datetime | None = Field(
        default=None, description="When the current step began; the next analysis is due then."
    )
    replicas: int = Field(default=0, description="Pods the canary Deployment has.")
    ready_replicas: int = Field(default=0, description="Ready pods of the canary track.")
    awaiting_feedback_since: datetime | None = Field(
        default=None,
        description=(
            "When analyses of this step began to wait for quality labels; "
            "analysis.quality.feedbackDeadline counts from then."
        ),
    )
    switched_at: datetime | None = Field(
        default=None, description="blueGreen: when all traffic switched to the new version."
    )
    stage: str | None = Field(
        default=None,
        description=(
            "Shadow while the new revision only receives mirrored copies of live traffic; "
            "unset once its strategy serves it live traffic."
        ),
    )
    shadow_passes: int = Field(
        default=0, description="Passing analyses of the shadow so far (strategy.shadow.analyses)."
    )


class CheckResult(StatusModel):
    name: str = Field(description="Check name.")
    query: str = Field(default="", description="The PromQL that was run.")
    value: float | None = Field(default=None, description="The query's result.")
    min: float | None = Field(default=None, description="Lowest passing value.")
    max: float | None = Field(default=None, description="Highest passing value.")
    verdict: Verdict = Field(description="Pass, Fail, NoData or Error.")
    message: str = Field(default="", description="Why, in words.")


class AnalysisStatus(StatusModel):
    at: datetime = Field(description="When the analysis ran.")
    revision: str = Field(default="", description="Canary revision the analysis judged.")
    step: int = Field(default=0, description="Step the analysis judged.")
    verdict: Verdict = Field(description="Overall verdict: the worst of the checks.")
    requests: float | None = Field(default=None, description="Canary requests in the window.")
    checks: list[CheckResult] = Field(default_factory=list, description="Each check's result.")
    awaiting_feedback: bool = Field(
        default=False,
        description=(
            "NoData only because quality labels have not arrived yet: the step holds "
            "without counting toward inconclusiveLimit until analysis.quality.feedbackDeadline."
        ),
    )


class FeatureDrift(StatusModel):
    feature: str = Field(description="Name of the input feature.")
    psi: float = Field(description="PSI of its live bins against the profile's shares.")
    bin: str = Field(default="", description="The bin that adds most to the PSI.")
    profile_share: float | None = Field(
        default=None, description="Share of the training rows in that bin."
    )
    live_share: float | None = Field(default=None, description="Share of the live rows in it.")


class PredictionDriftStatus(StatusModel):
    statistic: DriftStatistic = Field(description="psi or ks.")
    value: float = Field(description="The statistic of the most drifted output.")
    output: str = Field(default="", description="That output's name.")
    max: float | None = Field(default=None, description="The bound that was applied.")


class QualityStatus(StatusModel):
    metric: Literal["accuracy", "auc", "mae"] = Field(description="accuracy, auc or mae.")
    value: float | None = Field(default=None, description="Live value from feedback.")
    reference: float | None = Field(
        default=None, description="The profile's reference value, measured on its labels."
    )
    feedback: float | None = Field(default=None, description="Labelled rows in the window.")


class DriftStatus(StatusModel):
    at: datetime = Field(description="When the stable was last compared.")
    version: str = Field(description="Model version of the stable that was compared.")
    window: str = Field(description="The window compared (monitoring.interval).")
    verdict: Verdict = Field(
        description="Pass, Fail (a bound is crossed), NoData (too few rows) or Error."
    )
    message: str = Field(default="", description="The verdict in words, naming what crossed.")
    rows: float | None = Field(default=None, description="Live rows counted in the window.")
    features: list[FeatureDrift] = Field(
        default_factory=list,
        max_length=50,
        description="The most drifted features, most drifted first.",
    )
    prediction: PredictionDriftStatus | None = Field(
        default=None, description="The outputs against the profile."
    )
    quality: QualityStatus | None = Field(default=None, description="Live quality.")
    checks: list[CheckResult] = Field(
        default_factory=list, max_length=20, description="Each bound's check."
    )
    breached_since: datetime | None = Field(
        default=None,
        description="When a bound was first found crossed; cleared when all pass again.",
    )


class SLOStatus(StatusModel):
    at: datetime = Field(description="When compliance was last computed.")
    version: str = Field(description="Model version of the stable.")
    period: str = Field(description="The period counted over (monitoring.slo.period).")
    objective: float = Field(description="Share of windows that should keep analysis.slo.")
    windows: int | None = Field(default=None, description="Windows with traffic in the period.")
    compliance: float | None = Field(
        default=None,
        description="Share of those windows within maxErrorRate and maxLatencyP99.",
    )
    error_budget_remaining: float | None = Field(
        default=None,
        description=(
            "Share of the error budget (1 - objective of the windows) left; below 0 when overspent."
        ),
    )
    message: str = Field(default="", description="Compliance in words.")
    breached_since: datetime | None = Field(
        default=None,
        description="When the budget was first found spent; cleared when it recovers.",
    )


class ExperimentPhase(StrEnum):
    RUNNING = "Running"
    CONCLUDED = "Concluded"
    STOPPED = "Stopped"


class ArmState(StrEnum):
    RUNNING = "Running"
    CUT = "Cut"


class ArmStatus(StatusModel):
    """One arm of an experiment: its pods, its traffic and, once judged, its numbers."""

    name: str = Field(description="control, or the variant's name.")
    version: str = Field(description="Model version the arm serves.")
    revision: str = Field(default="", description="Hash of the arm's pod-shaping spec.")
    weight: int = Field(default=0, description="Percent of live traffic the arm should get.")
    actual_weight: int | None = Field(
        default=None, description="Percent the router achieved (replicas router: pod ratio)."
    )
    replicas: int = Field(default=0, description="Pods the arm's Deployment has.")
    ready_replicas: int = Field(default=0, description="Ready pods of the arm.")
    state: ArmState = Field(
        default=ArmState.RUNNING,
        description="Running, or Cut: it failed its SLO checks and its traffic went to control.",
    )
    reason: str = Field(default="", description="Why the arm was cut.")
    failed_checks: int = Field(default=0, description="Failed SLO analyses of the arm so far.")
    successes: int | None = Field(default=None, description="Successes counted for the arm.")
    samples: int | None = Field(default=None, description="Trials (requests) counted.")
    rate: float | None = Field(default=None, description="successes / samples.")
    rate_low: float | None = Field(default=None, description="Wilson interval, low end.")
    rate_high: float | None = Field(default=None, description="Wilson interval, high end.")
    difference: float | None = Field(default=None, description="rate - control's rate.")
    difference_low: float | None = Field(
        default=None, description="Newcombe interval of the difference, low end."
    )
    difference_high: float | None = Field(
        default=None, description="Newcombe interval of the difference, high end."
    )
    p_value: float | None = Field(
        default=None, description="Two-sided p-value of the two-proportion z-test vs control."
    )
    adjusted_p_value: float | None = Field(
        default=None, description="The p-value after Holm's correction across the variants."
    )
    outcome: str | None = Field(
        default=None,
        description="Better, Worse, NoSignificantDifference or InsufficientData (variants).",
    )


class ExperimentStatus(StatusModel):
    id: str = Field(
        description="Hash of the experiment block and the control's revision it ran against."
    )
    attempt: int = Field(default=1, description="Runs of this experiment (retries add one).")
    phase: ExperimentPhase = Field(description="Running, Concluded or Stopped.")
    message: str = Field(default="", description="Where it stands, or its verdict, in words.")
    started_at: datetime = Field(description="When the variants were started.")
    ready_at: datetime | None = Field(
        default=None, description="When every arm had ready pods; the counting window starts."
    )
    ends_at: datetime | None = Field(
        default=None, description="When the verdict is due (ready_at + duration)."
    )
    concluded_at: datetime | None = Field(default=None, description="When it ended.")
    last_analysis_at: datetime | None = Field(
        default=None, description="When the arms' SLO checks last ran."
    )
    metric: str = Field(default="", description="What the arms were compared on.")
    control: ArmStatus = Field(description="The stable's arm.")
    variants: list[ArmStatus] = Field(
        default_factory=list, max_length=MAX_VARIANTS, description="The variants' arms."
    )
    winner: str | None = Field(
        default=None, description="The Better variant with the highest rate, if any."
    )
    winner_patch: str | None = Field(
        default=None,
        description=(
            "The JSON merge patch of the ModelDeployment that makes the winner the model "
            "(rolled out as a canary); kubectl modeldeploy apply-winner applies it."
        ),
    )


class HistoryEntry(StatusModel):
    revision: str = Field(description="Revision the entry is about.")
    version: str = Field(description="Model version of that revision.")
    outcome: Outcome = Field(description="Deployed, Promoted, RolledBack or Superseded.")
    reason: str = Field(default="", description="Why, in words.")
    at: datetime = Field(description="When it happened.")


HISTORY_LIMIT = 10


class ModelDeploymentStatus(StatusModel):
    phase: Phase = Field(default=Phase.PENDING, description="Where the deployment stands.")
    message: str = Field(default="", description="Human-readable summary of the phase.")
    observed_generation: int | None = Field(
        default=None, description="Last spec generation the operator acted on."
    )
    replicas: int | None = Field(
        default=None, description="Pods of the stable track (the scale subresource reads it)."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the serving pods (for the scale subresource)."
    )
    revision: str | None = Field(
        default=None, description="Hash of the pod-shaping spec the user asked for."
    )
    stable: StableStatus | None = Field(default=None, description="The stable track.")
    canary: CanaryStatus | None = Field(
        default=None,
        description="The new revision on its way to stable (canary, preview or verification).",
    )
    previous: PreviousStatus | None = Field(
        default=None,
        description="The revision a blueGreen switch or a direct replacement goes back to.",
    )
    validation: ValidationStatus | None = Field(
        default=None, description="The offline check of the newest revision that had one."
    )
    last_analysis: AnalysisStatus | None = Field(
        default=None, description="The most recent analysis with every check's value."
    )
    drift: DriftStatus | None = Field(
        default=None,
        description="spec.monitoring: the stable's live traffic against model.profile.",
    )
    slo: SLOStatus | None = Field(
        default=None, description="spec.monitoring: the stable's SLO compliance."
    )
    rejected_revision: str | None = Field(
        default=None,
        description="A rolled-back revision that is not retried until the spec changes or retry.",
    )
    experiment: ExperimentStatus | None = Field(
        default=None,
        description="strategy experiment: the arms, their numbers and the verdict of the last run.",
    )
    paused_by_request: bool = Field(
        default=False,
        description="Paused by the modeldeploy.dev/pause annotation until modeldeploy.dev/resume.",
    )
    handled_requests: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Manual requests (promote, abort, retry, pause, resume) already acted on, "
            "by annotation."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Available (stable serves), Ready (this generation serves in full), Reconciling "
            "(a rollout is in flight), Stalled (rolled back, invalid or conflicting), Progressing."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} outcomes, newest first.",
    )


MAX_NAME_LENGTH = 56
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_NAME_MESSAGE = (
    f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
    "(lowercase letters, digits and '-', starting with a letter): the operator names its "
    "Services NAME-stable and NAME-canary"
)
NAME_RULE = cel(
    f"self.metadata.name.size() <= {MAX_NAME_LENGTH} "
    f"&& self.metadata.name.matches('{NAME_PATTERN}')",
    _NAME_MESSAGE,
)
MAX_CHILD_NAME_LENGTH = 63
VARIANT_INFIX = "-v-"
_VARIANT_NAME_FITS_MESSAGE = (
    "strategy.experiment.variants: a variant's Deployment and Service are named "
    f"NAME{VARIANT_INFIX}VARIANT, which must fit in {MAX_CHILD_NAME_LENGTH} characters; "
    "shorten the variant's name"
)
VARIANT_NAME_RULE = cel(
    "!has(self.spec.strategy) || !has(self.spec.strategy.experiment) || "
    "self.spec.strategy.experiment.variants.all(v, self.metadata.name.size() + "
    f"v.name.size() + {len(VARIANT_INFIX)} <= {MAX_CHILD_NAME_LENGTH})",
    _VARIANT_NAME_FITS_MESSAGE,
)


class ObjectMeta(StatusModel):
    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """A whole object as read from the API server or an example file."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: Literal["modeldeploy.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @field_validator("metadata")
    @classmethod
    def _name_fits_children(cls, metadata: ObjectMeta) -> ObjectMeta:
        if len(metadata.name) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, metadata.name):
            raise ValueError(_NAME_MESSAGE)
        return metadata

    @model_validator(mode="after")
    def _variant_names_fit(self) -> ModelDeployment:
        experiment = self.spec.strategy.experiment
        if experiment is not None and any(
            len(self.metadata.name) + len(VARIANT_INFIX) + len(v.name) > MAX_CHILD_NAME_LENGTH
            for v in experiment.variants
        ):
            raise ValueError(_VARIANT_NAME_FITS_MESSAGE)
        return self


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.version"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canary.weight"},
    {"name": "Actual", "type": "integer", "jsonPath": ".status.canary.actualWeight"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]
