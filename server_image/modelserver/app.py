"""The FastAPI application: V2 and V1 routers, /metrics, JSON error bodies, lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelserver import __version__
from modelserver.batching import MicroBatcher
from modelserver.inference import InferenceService, error_response
from modelserver.loading import LoadedModel
from modelserver.metrics import ServerMetrics, default_prediction_buckets, render
from modelserver.routes_v1 import v1_router
from modelserver.routes_v2 import v2_router
from modelserver.schemas import InferenceRequest, V1PredictRequest
from modelserver.settings import Settings


def create_app(settings: Settings, loaded: LoadedModel, registry: CollectorRegistry) -> FastAPI:
    model = loaded.model
    loaded_metrics = ServerMetrics(
        registry,
        model=settings.model_name,
        model_version=settings.model_version,
        track=settings.track,
        modeldeployment=settings.deployment,
        model_format=model.format,
        task=str(model.task),
        sha256=loaded.sha256,
        prediction_buckets=settings.prediction_buckets or default_prediction_buckets(model.task),
    )
    loaded_metrics.model_load_seconds.set(loaded.load_seconds)
    batcher = MicroBatcher(
        model.predict, settings.max_batch_rows, loaded_metrics.batch_rows.observe
    )
    service = InferenceService(settings, loaded, loaded_metrics, batcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        service.ready = True
        try:
            yield
        finally:
            service.ready = False
            await batcher.stop()

    app = FastAPI(
        title="modelserver",
        version=__version__,
        description=f"Serves model {settings.model_name!r} version {settings.model_version!r}.",
        lifespan=lifespan,
    )
    app.include_router(v2_router(service))
    app.include_router(v1_router(service))

    @app.get("/metrics", tags=["Monitoring"], response_class=Response)
    async def metrics() -> Response:
        content, content_type = render(registry)
        return Response(content, media_type=content_type)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        return error_response(422, str(error.errors()))

    _document_hand_parsed_bodies(app)
    return app


def _document_hand_parsed_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies parsed inside the handlers to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for body_model in (InferenceRequest, V1PredictRequest):
            schema = body_model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[body_model.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
