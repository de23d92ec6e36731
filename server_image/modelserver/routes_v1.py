"""V1 style predict endpoint: {"instances": [[...]]} -> {"predictions": [...]}."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from modelserver.inference import InferenceService, describe_validation_error
from modelserver.metrics import ENDPOINT_V1_PREDICT
from modelserver.model import Prediction
from modelserver.schemas import ErrorBody, V1PredictRequest, V1PredictResponse
from modelserver.tensors import json_array, v1_rows

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 422, 500)
}


def v1_router(service: InferenceService) -> APIRouter:
    router = APIRouter(tags=["V1"])
    model = service.loaded.model

    def decode(body: bytes) -> tuple[npt.NDArray[np.floating], Callable[[Prediction], Any]]:
        try:
            request = V1PredictRequest.model_validate_json(body)
        except ValidationError as error:
            raise describe_validation_error(error) from error
        return v1_rows(request.instances, model), respond

    def respond(prediction: Prediction) -> dict[str, Any]:
        body: dict[str, Any] = {"predictions": json_array(prediction.values)}
        if prediction.probabilities is not None:
            body["probabilities"] = prediction.probabilities
        return body

    @router.post(
        "/v1/models/{model_name}:predict",
        response_model=V1PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/V1PredictRequest"}
                    }
                },
            }
        },
    )
    async def predict(model_name: str, request: Request) -> Response:
        return await service.handle(request, ENDPOINT_V1_PREDICT, model_name, None, decode)

    return router
