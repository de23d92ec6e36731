"""A model served by modelserver, seen through its real HTTP API (Open Inference Protocol V2):
its metadata, and predictions for many rows sent in batches."""

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from modelserver.validate_errors import ValidateError

log = logging.getLogger(__name__)

# The model's V2 URL: metadata there, inference at URL/infer.
MODEL_URL_PATTERN = re.compile(r"^https?://[^/\s]+(/\S*)?/v2/models/[^/\s]+(/versions/[^/\s]+)?$")
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_SECONDS = 8.0
_ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True)
class ModelInfo:
    """What the endpoint's metadata says about its model."""

    name: str
    task: str
    """regression, binary or multiclass"""
    n_features: int
    feature_names: list[str] | None
    classes: list[Any] | None
    has_probabilities: bool
    input_name: str


@dataclass(frozen=True)
class Predictions:
    values: npt.NDArray[Any]
    """The `predict` output, one per row: a class label or a predicted value."""
    probabilities: npt.NDArray[np.float64] | None
    """The `predict_proba` output [rows, classes], when asked for."""


class Endpoint:
    """One model's V2 URL, e.g. http://fraud-canary.ml.svc/v2/models/fraud/versions/2.1.0."""

    def __init__(
        self, role: str, url: str, client: httpx.Client, retries: int, batch_rows: int
    ) -> None:
        self.role = role
        self.url = url.rstrip("/")
        self._client = client
        self._retries = retries
        self._batch_rows = batch_rows

    def metadata(self) -> ModelInfo:
        body = self._call("GET", self.url, None)
        try:
            parameters = body.get("parameters") or {}
            task = parameters["task"]
            tensor = body["inputs"][0]
            n_features = int(tensor["shape"][1])
            outputs = {output["name"] for output in body.get("outputs", [])}
            return ModelInfo(
                name=str(body.get("name", "")),
                task=str(task),
                n_features=n_features,
                feature_names=parameters.get("feature_names"),
                classes=parameters.get("classes"),
                has_probabilities="predict_proba" in outputs,
                input_name=str(tensor["name"]),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValidateError(
                "endpoint",
                f"the {self.role} model's metadata at {self.url} is not what modelserver "
                f"answers (no task, or no input of shape [-1, features]): {_shorten(body)}",
            ) from error

    def predict(
        self, info: ModelInfo, features: npt.NDArray[np.float64], probabilities: bool
    ) -> Predictions:
        """Predictions for every row, `batch_rows` rows per request, in order."""
        outputs = ["predict", "predict_proba"] if probabilities else ["predict"]
        values: list[npt.NDArray[Any]] = []
        probability_blocks: list[npt.NDArray[np.float64]] = []
        for start in range(0, len(features), self._batch_rows):
            block = features[start : start + self._batch_rows]
            body = {
                "inputs": [
                    {
                        "name": info.input_name,
                        "shape": list(block.shape),
                        "datatype": "FP64",
                        # NaN (a missing value) goes as JSON NaN, which the server takes.
                        "data": block.ravel().tolist(),
                    }
                ],
                "outputs": [{"name": name} for name in outputs],
            }
            try:
                answer = self._call("POST", f"{self.url}/infer", body)
            except ValidateError as error:
                if error.kind != "model":
                    raise
                # The server numbers rows within its request.
                where = f"dataset rows {start + 1}..{start + len(block)}"
                raise ValidateError("model", f"{error.message} (a request of {where})") from error
            decoded = self._outputs(answer, len(block))
            values.append(decoded["predict"])
            if probabilities:
                probability_blocks.append(
                    np.asarray(decoded["predict_proba"], dtype=np.float64).reshape(len(block), -1)
                )
        return Predictions(
            np.concatenate(values),
            np.concatenate(probability_blocks) if probabilities else None,
        )

    def _outputs(self, answer: Any, rows: int) -> dict[str, npt.NDArray[Any]]:
        try:
            decoded = {}
            for output in answer["outputs"]:
                data = np.asarray(output["data"])
                shape = [int(size) for size in output["shape"]]
                if shape[0] != rows or data.size != int(np.prod(shape)):
                    raise ValueError(f"output {output['name']} has shape {shape}")
                decoded[str(output["name"])] = data.reshape(shape)
            predicted = decoded["predict"]
            if predicted.ndim > 1:
                if predicted.shape[1] != 1:
                    raise ValueError(f"predict has {predicted.shape[1]} values per row")
                decoded["predict"] = predicted[:, 0]
            return decoded
        except (KeyError, TypeError, ValueError) as error:
            raise ValidateError(
                "endpoint",
                f"the {self.role} model at {self.url} answered an inference request with "
                f"something else than one prediction per row ({error}): {_shorten(answer)}",
            ) from error

    def _call(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        """The JSON answer; connection errors and overload answers are retried with backoff."""
        content = None if body is None else json.dumps(body).encode()
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                delay = min(0.5 * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS)
                log.warning("%s: %s; retrying in %.1fs", self.role, problem, delay)
                time.sleep(delay)
            try:
                response = self._client.request(
                    method, url, content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}".rstrip(": ")
                continue
            if response.status_code in _RETRYABLE_STATUS:
                problem = f"HTTP {response.status_code} {_error_text(response)}".rstrip()
                continue
            if response.status_code != 200:
                raise self._refused(response)
            try:
                return response.json()
            except ValueError as error:
                raise ValidateError(
                    "endpoint",
                    f"the {self.role} endpoint {url} answered with something else than JSON: "
                    f"{response.text[:_ERROR_TEXT_LIMIT]!r}",
                ) from error
        raise ValidateError(
            "endpoint",
            f"the {self.role} endpoint {url} failed {self._retries + 1} attempts, the last with "
            f"{problem}",
        )

    def _refused(self, response: httpx.Response) -> ValidateError:
        text = _error_text(response)
        if response.status_code == 422:
            # The model refused rows that are valid V2 requests: the model's doing.
            return ValidateError(
                "model", f"the {self.role} model at {self.url} refused the dataset's rows: {text}"
            )
        if response.status_code == 404:
            return ValidateError(
                "endpoint",
                f"the {self.role} endpoint has no such model: {response.request.url} answered "
                f"404 {text}",
            )
        return ValidateError(
            "endpoint",
            f"the {self.role} endpoint {response.request.url} answered HTTP "
            f"{response.status_code} {text}".rstrip(),
        )


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_ERROR_TEXT_LIMIT]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:_ERROR_TEXT_LIMIT]
    return _shorten(body)


def _shorten(body: Any) -> str:
    text = json.dumps(body, default=str)
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 3] + "..."
