"""The server's .proto says what V2 clients say: every message and method it defines has the
names, numbers and types of the stubs that tritonclient ships; and the generated modules
are what scripts/generate_grpc.sh makes of the .proto today."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import service_pb2 as triton

from modelserver.protos import open_inference_pb2 as ours

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "server_image" / "modelserver" / "protos"


def messages(descriptor: Descriptor) -> list[Descriptor]:
    """The message and those nested in it, map entries included."""
    return [descriptor, *(m for nested in descriptor.nested_types for m in messages(nested))]


def field_signature(field: FieldDescriptor) -> dict[str, Any]:
    return {
        "number": field.number,
        "type": field.type,
        "repeated": field.is_repeated,
        "message": field.message_type.full_name if field.message_type else None,
        "oneof": field.containing_oneof.name if field.containing_oneof else None,
    }


OUR_MESSAGES = [
    message for top in ours.DESCRIPTOR.message_types_by_name.values() for message in messages(top)
]


def test_the_proto_defines_the_v2_service_in_the_protocols_package():
    assert ours.DESCRIPTOR.package == "inference"
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [method.name for method in service.methods] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ]


@pytest.mark.parametrize("message", OUR_MESSAGES, ids=lambda message: message.full_name)
def test_each_message_has_tritonclients_fields(message: Descriptor):
    theirs = triton.DESCRIPTOR.pool.FindMessageTypeByName(message.full_name)
    assert {f.name: field_signature(f) for f in message.fields} == {
        f.name: field_signature(f) for f in theirs.fields
    }


def test_each_method_takes_and_gives_what_tritonclient_sends_and_expects():
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name


def test_a_request_from_tritonclient_reads_the_same_in_our_messages():
    request = triton.ModelInferRequest(model_name="m", model_version="2", id="r-1")
    request.parameters["binary_data_output"].bool_param = True
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 2])
    tensor.parameters["content_type"].string_param = "np"
    request.outputs.add(name="predict_proba")
    request.raw_input_contents.append(b"\x00" * 8)

    read = ours.ModelInferRequest.FromString(request.SerializeToString())

    assert read.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )
    assert read.inputs[0].parameters["content_type"].string_param == "np"


def test_the_generated_modules_are_what_the_script_makes_of_the_proto(tmp_path: Path):
    subprocess.run(
        [str(REPO / "scripts" / "generate_grpc.sh"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    for name in ("open_inference_pb2.py", "open_inference_pb2.pyi"):
        generated = (tmp_path / "modelserver" / "protos" / name).read_text()
        assert generated == (PROTOS / name).read_text(), f"{name}: run make grpc-stubs"
