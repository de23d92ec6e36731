"""Request bodies -> rows, and predictions -> response bodies, for V2 infer and V1 predict.

Decoding is split from answering: `decode_v2` and `decode_v1` are plain functions of the
body and a picklable ModelInput, so that large bodies can be decoded in another process
(decoding.py); `respond` runs where the prediction is.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from modelserver.model import Prediction
from modelserver.schemas import InferenceRequest, V1PredictRequest
from modelserver.tensors import (
    BAD_REQUEST,
    InvalidInput,
    ModelInput,
    Rows,
    check_requested_outputs,
    json_array,
    v1_rows,
    v2_outputs,
    v2_rows,
)

_Body = TypeVar("_Body", bound=BaseModel)


class Decoded(NamedTuple):
    """A checked request: its rows and what the answer must say besides the predictions."""

    rows: Rows
    outputs: tuple[str, ...] = ()
    """V2: the outputs requested."""
    request_id: str | None = None


class Stamp(NamedTuple):
    """What identifies a response besides its predictions."""

    request_id: str | None
    """The request's id, else one the server made when it has a feedback key."""
    token: str | None
    """The signed prediction token, when the server has a feedback key."""


TOKEN_FIELD = "prediction_token"

DecodeFunction = Callable[[bytes, ModelInput], Decoded]
RespondFunction = Callable[[Decoded, Prediction, Stamp], dict[str, Any]]


@dataclass(frozen=True)
class Codec:
    decode: DecodeFunction
    """A module-level function, so that a worker process can run it."""
    respond: RespondFunction


def parse_body(body: bytes, model: type[_Body]) -> _Body:
    """Validate a JSON body; orjson first, as it is the faster parser."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Not strict JSON: maybe the NaN/Infinity that Python clients write, which pydantic
        # accepts; otherwise pydantic reports where the JSON is broken.
        return _validate(lambda: model.model_validate_json(body))
    if not isinstance(parsed, dict):
        raise InvalidInput(
            f"invalid request body: must be a JSON object, got {parsed!r:.40}", BAD_REQUEST
        )
    return _validate(lambda: model.model_validate(parsed))


def _validate(validate: Callable[[], _Body]) -> _Body:
    try:
        return validate()
    except ValidationError as error:
        raise describe_validation_error(error) from error


def describe_validation_error(error: ValidationError) -> InvalidInput:
    """One readable line for a body that is not JSON or not shaped like the protocol says."""
    problems = error.errors(include_url=False)
    if problems[0]["type"] == "json_invalid":
        reason = str(problems[0]["msg"]).removeprefix("Invalid JSON: ")
        return InvalidInput(f"malformed JSON: {reason}", BAD_REQUEST)
    details = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems[:3]
    )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidInput(f"invalid request body: {details}{more}", BAD_REQUEST)


def decode_v2(body: bytes, model: ModelInput) -> Decoded:
    request = parse_body(body, InferenceRequest)
    outputs = check_requested_outputs(request, model.outputs)
    return Decoded(v2_rows(request, model), outputs, request.id)


def decode_v1(body: bytes, model: ModelInput) -> Decoded:
    request = parse_body(body, V1PredictRequest)
    return Decoded(v1_rows(request.instances, model))


def v2_codec(model_name: str, model_version: str) -> Codec:
    def respond(decoded: Decoded, prediction: Prediction, stamp: Stamp) -> dict[str, Any]:
        response: dict[str, Any] = {
            "model_name": model_name,
            "model_version": model_version,
            "outputs": v2_outputs(prediction, decoded.outputs),
        }
        if stamp.request_id is not None:
            response["id"] = stamp.request_id
        if stamp.token is not None:
            response["parameters"] = {TOKEN_FIELD: stamp.token}
        return response

    return Codec(decode_v2, respond)


def _respond_v1(_: Decoded, prediction: Prediction, stamp: Stamp) -> dict[str, Any]:
    body: dict[str, Any] = {"predictions": json_array(prediction.values)}
    if prediction.probabilities is not None:
        body["probabilities"] = json_array(prediction.probabilities)
    if stamp.request_id is not None:
        body["id"] = stamp.request_id
    if stamp.token is not None:
        body[TOKEN_FIELD] = stamp.token
    return body


V1_CODEC = Codec(decode_v1, _respond_v1)
