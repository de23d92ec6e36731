#!/usr/bin/env bash
# Regenerates the Python modules of server_image/modelserver/protos/open_inference.proto
# (make grpc-stubs): the messages (open_inference_pb2.py) and their types for mypy (.pyi),
# with the grpcio-tools of the committed lock. The server registers its handlers itself
# (modelserver/grpc_server.py), so no service stub module is generated.
#
# The messages go into a descriptor pool of their own instead of protobuf's default pool:
# they are named inference.* as the protocol says, like those that tritonclient and other
# V2 clients ship, and two definitions of one name in the default pool fail to import.
#
# Usage: scripts/generate_grpc.sh [OUTPUT_ROOT]  (default server_image: in place)
# PYTHON names the interpreter that has grpcio-tools (default: the locked environment's).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-server_image}"
read -r -a python <<< "${PYTHON:-uv run --locked python}"
"${python[@]}" -m grpc_tools.protoc -I server_image \
    --python_out="$out" --pyi_out="$out" server_image/modelserver/protos/open_inference.proto
"${python[@]}" - "$out/modelserver/protos/open_inference_pb2.py" <<'PYTHON'
import sys
from pathlib import Path

generated = Path(sys.argv[1])
default = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
own = (
    "_POOL = _descriptor_pool.DescriptorPool()  # not the default pool: see scripts/generate_grpc.sh\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)
text = generated.read_text()
if text.count(default) != 1:
    sys.exit("generate_grpc.sh: protoc's output changed; the private descriptor pool was not set")
generated.write_text(text.replace(default, own))
PYTHON
