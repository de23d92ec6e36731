"""The HTTP ceiling: FastAPI on uvicorn (uvloop, httptools) answering a constant."""

from fastapi import FastAPI
from starlette.responses import Response

app = FastAPI()
_BODY = b'{"model_name":"constant","outputs":[]}'


@app.get("/v2/models/{model_name}/ready")
async def ready(model_name: str) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


@app.post("/v2/models/{model_name}/infer")
async def infer(model_name: str) -> Response:
    return Response(_BODY, media_type="application/json")
