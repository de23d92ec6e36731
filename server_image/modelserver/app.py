"""The application: inference endpoints in front of FastAPI (health, metadata, /metrics)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelserver import __version__
from modelserver.batching import MicroBatcher
from modelserver.codecs import V1_CODEC, v2_codec
from modelserver.decoding import BodyDecoder
from modelserver.feedback import Feedback, FeedbackMetrics, read_feedback_key
from modelserver.grpc_server import GrpcServer
from modelserver.inference import InferenceEndpoints, InferenceService, error_response
from modelserver.loading import LoadedModel, table_model
from modelserver.metrics import ServerMetrics, default_prediction_buckets, render
from modelserver.mirror import Mirror
from modelserver.model import Features, Model, Prediction, model_columns
from modelserver.prediction_token import TokenSigner
from modelserver.profile_metrics import ProfileCounters
from modelserver.routes_v2 import v2_router
from modelserver.schemas import (
    ErrorBody,
    FeedbackItem,
    InferenceRequest,
    InferenceResponse,
    V1PredictRequest,
    V1PredictResponse,
)
from modelserver.settings import Settings
from modelserver.shadow_compare import ShadowComparison
from modelserver.tensors import ModelInput

# With several workers, each worker's pending profile counts reach the shared metric
# files at least this often (a scrape of a worker flushes its own at once).
PROFILE_FLUSH_SECONDS = 1.0


def create_app(
    settings: Settings, loaded: LoadedModel, registry: CollectorRegistry, serve_grpc: bool = False
) -> InferenceEndpoints:
    """The app; with `serve_grpc`, its lifespan also serves gRPC on settings.grpc_port (the
    `modelserver` command does; an app under test takes no port)."""
    model = loaded.model
    metrics = ServerMetrics(
        registry,
        model=settings.model_name,
        model_version=settings.model_version,
        track=settings.track,
        modeldeployment=settings.deployment,
        variant=settings.variant,
        model_format=model.format,
        task=str(model.task),
        sha256=loaded.sha256,
        prediction_buckets=settings.prediction_buckets or default_prediction_buckets(model.task),
    )
    metrics.model_load_seconds.set(loaded.load_seconds)
    counters = _profile_counters(settings, loaded, registry, metrics)
    predict = _predict_function(model)
    if counters is not None:
        predict = _counting(predict, counters)
    batcher = MicroBatcher(
        predict,
        settings.max_batch_rows,
        metrics.batch_rows.observe,
        loop_allowed=settings.predict_threads == 1,
    )
    decoder = BodyDecoder(
        ModelInput.of(model), settings.large_body_bytes, settings.decode_processes
    )
    key = read_feedback_key(settings)
    signer, feedback = None, None
    if key is not None:
        signer = TokenSigner(
            key,
            settings.model_version,
            settings.track,
            model.task,
            model.classes,
            variant=settings.variant,
        )
        feedback = Feedback(key, settings, FeedbackMetrics(registry, metrics.base))
    mirror = None
    if settings.mirror_config_file is not None:
        mirror = Mirror(settings, registry, metrics.base)
    shadow = ShadowComparison(registry, metrics.base, model.task)
    service = InferenceService(settings, loaded, metrics, batcher, decoder, signer, mirror, shadow)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        grpc_server = GrpcServer(service) if serve_grpc else None
        if grpc_server is not None:
            await grpc_server.start()
        flusher = None if counters is None else asyncio.create_task(_flush_often(counters))
        if mirror is not None:
            mirror.start()
        service.ready = True
        try:
            yield
        finally:
            service.ready = False
            if mirror is not None:
                await mirror.stop()  # what is queued is dropped, not waited for
            if grpc_server is not None:
                await grpc_server.stop()  # its calls end before the batcher stops
            decoder.close()
            await batcher.stop()
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
            if counters is not None:
                counters.flush()

    app = FastAPI(
        title="modelserver",
        version=__version__,
        description=f"Serves model {settings.model_name!r} version {settings.model_version!r}.",
        lifespan=lifespan,
    )
    app.include_router(v2_router(service, feedback))

    @app.get("/metrics", tags=["Monitoring"], response_class=Response)
    async def prometheus_metrics() -> Response:
        if counters is not None:
            counters.flush()
        if mirror is not None:
            mirror.count()  # else up to HOUSEKEEPING_SECONDS behind
        content, content_type = render(registry)
        return Response(content, media_type=content_type)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        return error_response(422, str(error.errors()))

    _document_inference_endpoints(app)
    v2 = v2_codec(settings.model_name, settings.model_version)
    return InferenceEndpoints(app, service, v2, V1_CODEC)


def _profile_counters(
    settings: Settings, loaded: LoadedModel, registry: CollectorRegistry, metrics: ServerMetrics
) -> ProfileCounters | None:
    if loaded.profile is None or loaded.profile_sha256 is None:
        return None
    return ProfileCounters(
        loaded.profile,
        registry,
        metrics.base,
        settings.profile_max_features,
        loaded.model.input_dtype,
        loaded.profile_sha256,
    )


def _predict_function(model: Model) -> Callable[[Features], Prediction]:
    """What predicts a block of rows: the model's predict, or for a model that takes a
    DataFrame its predict_frame (its requests decode to tables, never to arrays)."""
    columns = model_columns(model)
    if columns is not None and columns.frame:
        return table_model(model).predict_frame
    return model.predict


def _counting(
    predict: Callable[[Features], Prediction], counters: ProfileCounters
) -> Callable[[Features], Prediction]:
    """The model's predict, counting every predicted block in the profile's bins (where
    the model is called: the predict thread, or the event loop for a quick model, see
    placement.py). Only models of arrays have a profile."""

    def predict_and_count(rows: Features) -> Prediction:
        prediction = predict(rows)
        assert isinstance(rows, np.ndarray)
        counters.observe(rows, prediction)
        return prediction

    return predict_and_count


async def _flush_often(counters: ProfileCounters) -> None:
    while True:
        await asyncio.sleep(PROFILE_FLUSH_SECONDS)
        counters.flush()


def _operation(
    summary: str, request: type[BaseModel], response: type[BaseModel], parameters: list[str]
) -> dict[str, Any]:
    def schema(body: type[BaseModel]) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}

    errors = {
        str(code): {"description": description, "content": schema(ErrorBody)}
        for code, description in (
            (400, "Malformed request"),
            (404, "Unknown model or version"),
            (413, "Body too large"),
            (422, "Input does not fit the model"),
            (500, "The model failed"),
        )
    }
    return {
        "post": {
            "summary": summary,
            "tags": ["Inference"],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in parameters
            ],
            "requestBody": {"required": True, "content": schema(request)},
            "responses": {
                "200": {"description": "Predictions", "content": schema(response)},
                **errors,
            },
        }
    }


def _document_inference_endpoints(app: FastAPI) -> None:
    """Add the endpoints that InferenceEndpoints answers, and their bodies, to the OpenAPI."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        document["paths"].update(
            {
                "/v2/models/{model_name}/infer": _operation(
                    "V2 infer", InferenceRequest, InferenceResponse, ["model_name"]
                ),
                "/v2/models/{model_name}/versions/{model_version}/infer": _operation(
                    "V2 infer (version)",
                    InferenceRequest,
                    InferenceResponse,
                    ["model_name", "model_version"],
                ),
                "/v1/models/{model_name}:predict": _operation(
                    "V1 predict", V1PredictRequest, V1PredictResponse, ["model_name"]
                ),
            }
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for body in (
            InferenceRequest,
            InferenceResponse,
            V1PredictRequest,
            V1PredictResponse,
            ErrorBody,
            FeedbackItem,
        ):
            schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[body.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
