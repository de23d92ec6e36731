"""Configuration from command-line flags and MODELSERVER_* environment variables."""

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ModelFormat = Literal["xgboost", "sklearn", "sklearn-joblib"]

ROLLOUT_TRACKS = ("stable", "canary")
VARIANT_TRACK_PREFIX = "v-"
"""The track of an experiment variant's pods is `v-<variant>`."""
CONTROL_VARIANT = "control"
"""The variant of the stable's pods while an experiment runs."""
# A variant's name: DNS-label-like, and short, as it becomes part of resource names.
_VARIANT_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?")
_VARIANT_NAME_RULE = (
    "1 to 20 lowercase letters, digits and '-', starting with a letter and ending with a"
    " letter or digit"
)

# Formats whose loading can run code that ships inside the artifact.
UNSAFE_FORMATS: frozenset[str] = frozenset({"sklearn-joblib"})

ENV_PREFIX = "MODELSERVER_"


def ignored_variables(environ: Mapping[str, str]) -> list[str]:
    """Variables that look like settings but are not spelled in upper case, so do not count."""
    return sorted(
        name for name in environ if name.upper().startswith(ENV_PREFIX) and name != name.upper()
    )


class _UpperCaseEnvironment(EnvSettingsSource):
    """MODELSERVER_* variables, read only when their name is spelled in upper case.

    pydantic-settings matches names regardless of case and the last spelling wins, so a
    pod's `modelserver_model_uri` would override the MODELSERVER_MODEL_URI (and checksum)
    that the operator pins.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        # Field names are matched in lower case; only exact upper-case names get there.
        self.env_vars = {
            name.lower(): value
            for name, value in os.environ.items()
            if name.startswith(ENV_PREFIX) and name == name.upper()
        }


class Settings(BaseSettings):
    """Every option is a flag (--model-uri) and a variable (MODELSERVER_MODEL_URI)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        cli_prog_name="modelserver",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,
        protected_namespaces=(),
    )

    model_uri: str = Field(description="Model artifact: a path, file://, http:// or https:// URI.")
    model_format: ModelFormat = Field(
        default="xgboost",
        description="xgboost (native JSON/UBJ), sklearn (skops) or sklearn-joblib (pickle).",
    )
    model_name: str = Field(
        default="",
        description="Name served at /v2/models/{name}; default: the artifact's file name stem.",
    )
    model_version: str = Field(default="1", description="Version reported and used as a label.")
    model_sha256: str | None = Field(
        default=None, description="Hex sha256 of the artifact, verified before loading."
    )
    allow_unpinned: bool = Field(
        default=False, description="Allow http(s) model URIs without --model-sha256."
    )
    allow_unsafe_formats: bool = Field(
        default=False, description="Allow sklearn-joblib, whose loading runs code (pickle)."
    )
    skops_trusted_types: list[str] = Field(
        default_factory=list,
        description="Extra fully qualified types to trust when loading skops files.",
    )

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port for the API and /metrics.")
    grpc_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port for the V2 protocol over gRPC (inference.GRPCInferenceService);"
        " 0: no gRPC.",
    )
    workers: int = Field(default=1, ge=1, description="Server processes, each with the model.")
    predict_threads: int = Field(
        default=1,
        ge=1,
        description="Threads per predict call (XGBoost nthread, BLAS/OpenMP pools).",
    )
    max_batch_rows: int = Field(
        default=1024,
        ge=1,
        description="Most rows that concurrent requests are merged into for one predict call.",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest accepted request body."
    )
    large_body_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="Bodies larger than this are decoded in a worker process, not on the"
        " event loop that also answers health probes.",
    )
    decode_processes: int = Field(
        default=1,
        ge=0,
        description="Processes that decode large bodies (started with the first one);"
        " 0 decodes every body on the event loop.",
    )
    graceful_timeout_seconds: float = Field(
        default=25.0, gt=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request's headers must arrive within this time, or the connection"
        " is closed.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A request's body must arrive within this time after its headers,"
        " or it gets 408.",
    )
    access_log: bool = Field(default=False, description="Log every request (costs throughput).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the server and uvicorn."
    )

    track: str = Field(
        default="stable",
        description="Metric label: stable, canary, or v-<variant> on an experiment variant's pods.",
    )
    variant: str = Field(
        default="",
        description="Experiment arm served (control on the stable's pods, else the variant's"
        " name): metric label `variant` and response header x-model-variant; default: none,"
        " or <variant> of a v-<variant> track.",
    )
    deployment: str = Field(
        default="", description="Metric label modeldeployment; default: the model name."
    )
    namespace: str = Field(default="", description="Pod namespace, informational only.")

    cache_dir: Path = Field(
        default=Path("/var/cache/modelserver"),
        description="Writable directory for downloaded models (and multi-worker metrics).",
    )
    download_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and read timeout of a model download."
    )
    download_max_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest model artifact that may be downloaded."
    )
    download_retries: int = Field(
        default=3, ge=0, description="Retries of a failed download (network errors and 5xx)."
    )
    termination_log: Path = Field(
        default=Path("/dev/termination-log"),
        description="Where the reason of a fatal start-up error is written, if the file exists.",
    )
    prediction_buckets: list[float] | None = Field(
        default=None,
        description="Buckets of modelserver_prediction_value; default depends on the task.",
    )

    profile_uri: str | None = Field(
        default=None,
        description="Reference profile of the model (modelserver profile): a path, file://,"
        " http:// or https:// URI; with it every prediction is counted per bin.",
    )
    profile_sha256: str | None = Field(
        default=None, description="Hex sha256 of the profile, verified before loading."
    )
    profile_max_features: int = Field(
        default=50,
        ge=1,
        description="Features counted per bin: the first ones in the model's input order.",
    )
    feedback_key_file: Path | None = Field(
        default=None,
        description="File holding the key that signs prediction tokens (a mounted Secret);"
        " with it responses carry a token and /v2/models/{name}/feedback takes labels.",
    )
    feedback_key: str | None = Field(
        default=None,
        repr=False,
        description="The signing key itself, instead of MODELSERVER_FEEDBACK_KEY_FILE.",
    )
    feedback_max_age_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="Feedback for a prediction older than this is refused (410).",
    )
    feedback_replay_capacity: int = Field(
        default=100_000,
        ge=1,
        description="Tokens each server process remembers so that a replayed one counts once.",
    )
    mirror_config_file: Path | None = Field(
        default=None,
        description='JSON file naming the shadow to mirror to, {"url": ..., "percent": ...}'
        " (a mounted ConfigMap, re-read every 2 s); none: never mirror.",
    )
    mirror_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Mirrored copies waiting to be sent; more are dropped (and counted).",
    )
    mirror_buffer_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="Shared memory holding the copies that wait for the mirror process;"
        " a copy that does not fit is dropped (and counted).",
    )
    mirror_connections: int = Field(
        default=4, ge=1, description="Keep-alive connections that send copies to the shadow."
    )
    mirror_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A copy the shadow has not answered within this time counts as failed.",
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

    @field_validator("model_sha256", "profile_sha256")
    @classmethod
    def _normalise_sha256(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        digest = value.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("must be 64 hexadecimal characters")
        return digest

    @field_validator("track")
    @classmethod
    def _check_track(cls, value: str) -> str:
        if value in ROLLOUT_TRACKS:
            return value
        if value.startswith(VARIANT_TRACK_PREFIX) and is_variant_name(
            value.removeprefix(VARIANT_TRACK_PREFIX)
        ):
            return value
        raise ValueError(
            f"{value!r} is not a track; expected stable, canary or v-<variant>, the variant's"
            f" name being {_VARIANT_NAME_RULE}"
        )

    @field_validator("variant")
    @classmethod
    def _check_variant(cls, value: str) -> str:
        if value == "" or is_variant_name(value):
            return value
        raise ValueError(
            f"{value!r} is not a variant name; expected {CONTROL_VARIANT} or a variant's name,"
            f" {_VARIANT_NAME_RULE} (or nothing, outside experiments)"
        )

    @model_validator(mode="after")
    def _fill_defaults_and_check_policy(self) -> "Settings":
        if self.track.startswith(VARIANT_TRACK_PREFIX):
            track_variant = self.track.removeprefix(VARIANT_TRACK_PREFIX)
            if not self.variant:
                self.variant = track_variant
            elif self.variant != track_variant:
                raise ValueError(
                    f"variant {self.variant!r} does not match track {self.track!r}: a"
                    f" variant's pods serve track v-<variant>; set MODELSERVER_VARIANT to"
                    f" {track_variant!r} or leave it unset"
                )
        if not self.model_name:
            self.model_name = PurePosixPath(urlparse(self.model_uri).path).name.split(".")[0]
        if not self.deployment:
            self.deployment = self.model_name
        if self.model_format in UNSAFE_FORMATS and not self.allow_unsafe_formats:
            raise ValueError(
                f"format {self.model_format} loads a pickle, which runs code from the artifact;"
                " set MODELSERVER_ALLOW_UNSAFE_FORMATS=true to accept that"
            )
        is_remote = urlparse(self.model_uri).scheme in ("http", "https")
        if is_remote and self.model_sha256 is None and not self.allow_unpinned:
            raise ValueError(
                "an http(s) model URI needs MODELSERVER_MODEL_SHA256"
                " (or MODELSERVER_ALLOW_UNPINNED=true)"
            )
        profile_is_remote = urlparse(self.profile_uri or "").scheme in ("http", "https")
        if profile_is_remote and self.profile_sha256 is None and not self.allow_unpinned:
            raise ValueError(
                "an http(s) profile URI needs MODELSERVER_PROFILE_SHA256"
                " (or MODELSERVER_ALLOW_UNPINNED=true)"
            )
        if self.profile_sha256 is not None and not self.profile_uri:
            raise ValueError("MODELSERVER_PROFILE_SHA256 is set without MODELSERVER_PROFILE_URI")
        if self.feedback_key_file is not None and self.feedback_key is not None:
            raise ValueError(
                "set the feedback key once: MODELSERVER_FEEDBACK_KEY_FILE or"
                " MODELSERVER_FEEDBACK_KEY, not both"
            )
        return self


def is_variant_name(name: str) -> bool:
    return _VARIANT_NAME.fullmatch(name) is not None
