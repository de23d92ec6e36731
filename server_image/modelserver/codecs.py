"""Request bodies -> rows, and predictions -> response bodies, for V2 infer and V1 predict."""

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from modelserver.model import Model, Prediction
from modelserver.schemas import InferenceRequest, V1PredictRequest
from modelserver.settings import Settings
from modelserver.tensors import (
    BAD_REQUEST,
    InvalidInput,
    Rows,
    check_requested_outputs,
    json_array,
    model_outputs,
    v1_rows,
    v2_outputs,
    v2_rows,
)

Respond = Callable[[Prediction], dict[str, Any]]
Decoder = Callable[[bytes], tuple[Rows, Respond]]

_Body = TypeVar("_Body", bound=BaseModel)


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


def v2_decoder(settings: Settings, model: Model) -> Decoder:
    outputs = model_outputs(model)

    def decode(body: bytes) -> tuple[Rows, Respond]:
        request = parse_body(body, InferenceRequest)
        names = check_requested_outputs(request, outputs)
        rows = v2_rows(request, model)

        def respond(prediction: Prediction) -> dict[str, Any]:
            response: dict[str, Any] = {
                "model_name": settings.model_name,
                "model_version": settings.model_version,
                "outputs": v2_outputs(prediction, names),
            }
            if request.id is not None:
                response["id"] = request.id
            return response

        return rows, respond

    return decode


def v1_decoder(model: Model) -> Decoder:
    def decode(body: bytes) -> tuple[Rows, Respond]:
        request = parse_body(body, V1PredictRequest)
        return v1_rows(request.instances, model), respond

    def respond(prediction: Prediction) -> dict[str, Any]:
        body: dict[str, Any] = {"predictions": json_array(prediction.values)}
        if prediction.probabilities is not None:
            body["probabilities"] = json_array(prediction.probabilities)
        return body

    return decode
