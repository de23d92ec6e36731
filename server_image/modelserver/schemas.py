"""Request and response bodies of the Open Inference Protocol (V2) and the V1 predict API.

Requests are validated with these models; responses of the hot paths are written with
orjson directly, and these models document them in the OpenAPI schema.
"""

from typing import Any

from pydantic import BaseModel, Field, StrictInt, StrictStr

TensorData = list[Any]


class _TensorFields(BaseModel):
    name: StrictStr
    shape: list[StrictInt] = Field(description="[rows, features]")
    datatype: StrictStr = Field(
        description="BOOL, INT8/16/32/64, UINT8/16/32/64, FP16, FP32, FP64 or BF16"
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="content_type: np (or none); binary_data_size: see below"
    )


class RequestInput(_TensorFields):
    data: TensorData = Field(description="Row-major values, flattened or nested")


class BinaryRequestInput(_TensorFields):
    """An input in the JSON header of a request with binary tensor data: its data is in
    the body after the header when parameters.binary_data_size says how many bytes."""

    data: TensorData | None = None


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data: true for the output as binary data;"
        " content_type: np (as computed) or str (as strings, datatype BYTES)",
    )


MAX_ID_LENGTH = 256


class _RequestFields(BaseModel):
    id: StrictStr | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="Echoed in the response and its inference-id header; default: made up",
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data_output: true for every output as binary data (unless an"
        " output says otherwise); content_type: np (or none)",
    )
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Outputs to return; default: all"
    )


class InferenceRequest(_RequestFields):
    inputs: list[RequestInput]


class BinaryInferenceRequest(_RequestFields):
    """The JSON header of a request with binary tensor data (Inference-Header-Content-Length)."""

    inputs: list[BinaryRequestInput]


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="content_type: np, or str for strings (BYTES); binary_data_size: the"
        " output's bytes after the JSON header, when it was asked for as binary data",
    )
    data: TensorData | None = Field(default=None, description="Absent when sent as binary data")


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


class ModelStatus(BaseModel):
    name: str
    ready: bool


class V1Models(BaseModel):
    models: list[str]


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
