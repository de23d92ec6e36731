"""Open Inference Protocol (V2) REST endpoints: health, metadata and infer."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from modelserver import __version__
from modelserver.inference import (
    InferenceService,
    JSONResponse,
    NotFound,
    describe_validation_error,
    error_response,
)
from modelserver.metrics import ENDPOINT_V2_INFER
from modelserver.model import Prediction
from modelserver.schemas import (
    ErrorBody,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
    TensorMetadata,
)
from modelserver.tensors import (
    OUTPUT_PREDICT,
    check_requested_outputs,
    model_outputs,
    v2_datatype,
    v2_outputs,
    v2_rows,
)

INPUT_NAME = "input-0"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 422, 500)
}
# The infer body is parsed by hand for speed; this puts its schema into the OpenAPI document.
INFER_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}
        },
    }
}


def v2_router(service: InferenceService) -> APIRouter:
    router = APIRouter(tags=["V2 (Open Inference Protocol)"])
    settings = service.settings
    model = service.loaded.model
    outputs = model_outputs(model)

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", responses={503: {"description": "Not ready"}})
    async def ready() -> Response:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @router.get("/v2", response_model=ServerMetadata)
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="modelserver", version=__version__, extensions=[])

    def metadata(name: str, version: str | None) -> Response:
        try:
            service.check_model(name, version)
        except NotFound as error:
            return error_response(404, str(error))
        warm = service.loaded.warm_up_prediction
        tensors = [
            TensorMetadata(
                name=OUTPUT_PREDICT,
                datatype=v2_datatype(warm.values),
                shape=[-1, *warm.values.shape[1:]],
            )
        ]
        if warm.probabilities is not None:
            tensors.append(
                TensorMetadata(
                    name=outputs[1],
                    datatype=v2_datatype(warm.probabilities),
                    shape=[-1, warm.probabilities.shape[1]],
                )
            )
        body = ModelMetadata(
            name=settings.model_name,
            versions=[settings.model_version],
            platform=model.format,
            inputs=[
                TensorMetadata(
                    name=INPUT_NAME,
                    datatype="FP32" if model.input_dtype is np.float32 else "FP64",
                    shape=[-1, model.n_features],
                )
            ],
            outputs=tensors,
            parameters={
                "task": str(model.task),
                "feature_names": model.feature_names,
                "classes": model.classes,
                "accepts_missing_values": model.accepts_missing,
                "sha256": service.loaded.sha256,
            },
        )
        return JSONResponse(body.model_dump())

    def model_ready(name: str, version: str | None) -> Response:
        try:
            service.check_model(name, version)
        except NotFound as error:
            return error_response(404, str(error))
        return JSONResponse(
            {"name": name, "ready": service.ready}, status_code=200 if service.ready else 503
        )

    def decode(body: bytes) -> tuple[npt.NDArray[np.floating], Callable[[Prediction], Any]]:
        try:
            request = InferenceRequest.model_validate_json(body)
        except ValidationError as error:
            raise describe_validation_error(error) from error
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

    @router.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=_ERRORS)
    async def get_model_metadata(model_name: str) -> Response:
        return metadata(model_name, None)

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        response_model=ModelMetadata,
        responses=_ERRORS,
    )
    async def get_model_version_metadata(model_name: str, model_version: str) -> Response:
        return metadata(model_name, model_version)

    @router.get("/v2/models/{model_name}/ready", responses=_ERRORS)
    async def get_model_ready(model_name: str) -> Response:
        return model_ready(model_name, None)

    @router.get("/v2/models/{model_name}/versions/{model_version}/ready", responses=_ERRORS)
    async def get_model_version_ready(model_name: str, model_version: str) -> Response:
        return model_ready(model_name, model_version)

    @router.post(
        "/v2/models/{model_name}/infer",
        response_model=InferenceResponse,
        responses=_ERRORS,
        openapi_extra=INFER_REQUEST_BODY,
    )
    async def infer(model_name: str, request: Request) -> Response:
        return await service.handle(request, ENDPOINT_V2_INFER, model_name, None, decode)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        response_model=InferenceResponse,
        responses=_ERRORS,
        openapi_extra=INFER_REQUEST_BODY,
    )
    async def infer_version(model_name: str, model_version: str, request: Request) -> Response:
        return await service.handle(request, ENDPOINT_V2_INFER, model_name, model_version, decode)

    return router
