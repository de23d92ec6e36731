"""Open Inference Protocol (V2) REST endpoints: health and metadata (infer: inference.py);
V1's model list and status."""

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelserver import __version__
from modelserver.feedback import Feedback
from modelserver.inference import InferenceService, JSONResponse, NotFound, error_response
from modelserver.model import Column, ColumnKind, model_columns
from modelserver.protocol import is_draining
from modelserver.schemas import (
    ErrorBody,
    FeedbackResponse,
    ModelMetadata,
    ModelStatus,
    ServerMetadata,
    TensorMetadata,
    V1Models,
)
from modelserver.tensors import (
    OUTPUT_PREDICT,
    TABLE_CONTENT,
    model_outputs,
    v2_datatype,
)

INPUT_NAME = "input-0"
EXTENSIONS = ["binary_tensor_data"]
"""The protocol extensions this server implements, as server metadata lists them."""
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 422, 500)
}
_FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in (
        (400, "Malformed body"),
        (403, "Bad token: altered, from another ModelDeployment, or not a token"),
        (404, "Unknown model, or feedback not enabled on this server"),
        (410, "Token expired"),
        (413, "Body too large"),
        (422, "Labels of the wrong type or count"),
    )
}
_NO_FEEDBACK = (
    "feedback is not enabled on this server: it has no key to verify prediction tokens"
    " (MODELSERVER_FEEDBACK_KEY_FILE or MODELSERVER_FEEDBACK_KEY), so its responses carry"
    " none"
)


def model_metadata(service: InferenceService) -> ModelMetadata:
    """What the served model takes and gives (REST and gRPC alike)."""
    settings = service.settings
    model = service.loaded.model
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
                name=model_outputs(model)[1],
                datatype=v2_datatype(warm.probabilities),
                shape=[-1, warm.probabilities.shape[1]],
            )
        )
    number = "FP32" if model.input_dtype is np.float32 else "FP64"
    columns = model_columns(model)
    inputs = [TensorMetadata(name=INPUT_NAME, datatype=number, shape=[-1, model.n_features])]
    parameters: dict[str, Any] = {
        "task": str(model.task),
        "feature_names": model.feature_names,
        "classes": model.classes,
        "accepts_missing_values": model.accepts_missing,
        "sha256": service.loaded.sha256,
    }
    if columns is not None:
        # Named columns: a table of one input per column (content_type pd) is taken too;
        # a model that wants a DataFrame takes nothing else.
        parameters["columns"] = [_column_metadata(column, number) for column in columns.columns]
        if columns.frame:
            parameters["content_type"] = TABLE_CONTENT
            inputs = [
                TensorMetadata(
                    name=column.name,
                    datatype="BYTES" if column.kind is ColumnKind.STRING else number,
                    shape=[-1, 1],
                )
                for column in columns.columns
            ]
    if settings.variant:
        parameters["variant"] = settings.variant  # only in experiments: the arm served
    return ModelMetadata(
        name=settings.model_name,
        versions=[settings.model_version],
        platform=model.format,
        inputs=inputs,
        outputs=tensors,
        parameters=parameters,
    )


def _column_metadata(column: Column, number: str) -> dict[str, Any]:
    """A column's name, datatype (None when the model does not tell) and, when the model
    takes no others, its categories."""
    datatype = {ColumnKind.STRING: "BYTES", ColumnKind.NUMBER: number}.get(column.kind)
    described: dict[str, Any] = {"name": column.name, "datatype": datatype}
    if column.categories is not None:
        described["categories"] = list(column.categories)
    return described


def v2_router(service: InferenceService, feedback: Feedback | None = None) -> APIRouter:
    router = APIRouter(tags=["V2 (Open Inference Protocol)"])
    settings = service.settings

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    def is_ready(request: Request) -> bool:
        return service.ready and not is_draining(request.scope)

    @router.get("/v2/health/ready", responses={503: {"description": "Not ready"}})
    async def ready(request: Request) -> Response:
        answer = is_ready(request)
        return JSONResponse({"ready": answer}, status_code=200 if answer else 503)

    @router.get("/v2", response_model=ServerMetadata)
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="modelserver", version=__version__, extensions=EXTENSIONS)

    def metadata(name: str, version: str | None) -> Response:
        try:
            service.check_model(name, version)
        except NotFound as error:
            return error_response(404, str(error))
        return JSONResponse(model_metadata(service).model_dump())

    def model_ready(request: Request, name: str, version: str | None) -> Response:
        try:
            service.check_model(name, version)
        except NotFound as error:
            return error_response(404, str(error))
        answer = is_ready(request)
        return JSONResponse({"name": name, "ready": answer}, status_code=200 if answer else 503)

    @router.get("/v1/models", tags=["V1"], response_model=V1Models)
    async def v1_models() -> V1Models:
        return V1Models(models=[settings.model_name])

    @router.get(
        "/v1/models/{model_name}",
        tags=["V1"],
        response_model=ModelStatus,
        responses={**_ERRORS, 503: {"model": ModelStatus, "description": "Not ready"}},
    )
    async def v1_model_status(request: Request, model_name: str) -> Response:
        """The model's status, as KServe's V1 protocol has it."""
        return model_ready(request, model_name, None)

    @router.post("/v1/models/{model_name}:explain", tags=["V1"], responses={404: _ERRORS[404]})
    async def v1_explain(model_name: str) -> Response:
        """Not served: a clear 404 rather than a 405 from the status path."""
        return error_response(404, "V1 explain is not supported by this server; use :predict")

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
    async def get_model_ready(request: Request, model_name: str) -> Response:
        return model_ready(request, model_name, None)

    @router.get("/v2/models/{model_name}/versions/{model_version}/ready", responses=_ERRORS)
    async def get_model_version_ready(
        request: Request, model_name: str, model_version: str
    ) -> Response:
        return model_ready(request, model_name, model_version)

    @router.post(
        "/v2/models/{model_name}/feedback",
        response_model=FeedbackResponse,
        responses=_FEEDBACK_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/FeedbackItem"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/FeedbackItem"},
                                },
                            ]
                        }
                    }
                },
            }
        },
    )
    async def post_feedback(request: Request, model_name: str) -> Response:
        """True labels for earlier responses, each identified by its prediction token."""
        try:
            service.check_model(model_name, None)
        except NotFound as error:
            return error_response(404, str(error))
        if feedback is None:
            return error_response(404, _NO_FEEDBACK)
        body = await _read_limited(request, settings.max_body_bytes)
        if body is None:
            return error_response(
                413, f"request body is larger than the limit of {settings.max_body_bytes} bytes"
            )
        status_code, answer = feedback.answer(body)
        return JSONResponse(answer, status_code=status_code)

    return router


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
