"""Request and response bodies of the Open Inference Protocol (V2) and the V1 predict API.

Requests are validated with these models; responses of the hot paths are written with
orjson directly, and these models document them in the OpenAPI schema.
"""

from typing import Any

from pydantic import BaseModel, Field, StrictInt, StrictStr

TensorData = list[Any]


class RequestInput(BaseModel):
    name: StrictStr
    shape: list[StrictInt] = Field(description="[rows, features]")
    datatype: StrictStr = Field(description="FP32, FP64, INT32, INT64 or BOOL")
    parameters: dict[str, Any] | None = None
    data: TensorData = Field(description="Row-major values, flattened or nested")


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = None


MAX_ID_LENGTH = 256


class InferenceRequest(BaseModel):
    id: StrictStr | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="Echoed in the response and its inference-id header; default: made up",
    )
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Outputs to return; default: all"
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: TensorData


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = Field(
        default=None,
        description="The request's id, else (with a feedback key) one the server made",
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="prediction_token: the signed token that feedback for this response"
        " sends back (when the server has a feedback key)",
    )
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorBody(BaseModel):
    error: str


class V1PredictRequest(BaseModel):
    instances: list[Any] = Field(description="Rows, each a list of feature values")


class V1PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = Field(
        default=None, description="Class probabilities (classifiers that have them)"
    )
    id: str | None = Field(
        default=None,
        description="With a feedback key: an id the server made, also in the inference-id header",
    )
    prediction_token: str | None = Field(
        default=None,
        description="The signed token that feedback for this response sends back (when the"
        " server has a feedback key)",
    )


class FeedbackItem(BaseModel):
    token: str = Field(description="The prediction_token of a response")
    labels: list[Any] = Field(description="The true label of each of its rows, in order")


class FeedbackResponse(BaseModel):
    tokens: int = Field(description="Tokens counted now")
    rows: int = Field(description="Labelled rows counted now")
    replayed: int = Field(description="Tokens this server process had counted before")
