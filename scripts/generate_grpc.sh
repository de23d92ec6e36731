#!/usr/bin/env bash
# Regenerates the Python modules of server_image/modelserver/protos/open_inference.proto
# (make grpc-stubs): the messages (open_inference_pb2.py) and their types for mypy (.pyi),
# with the grpcio-tools of the committed lock. The server registers its handlers itself
# (modelserver/grpc_server.py), so no service stub module is generated.
#
# The messages go into a descriptor pool of their own instead of protobuf's default pool:
# they are named inference.* as the protocol says, like those that tritonclient and other
# V2 clients ship, and two definitions of one name in the default pool fail to import.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-server_image}"
uv run --locked python -m grpc_tools.protoc -I server_image \
    --python_out="$out" --pyi_out="$out" server_image/modelserver/protos/open_inference.proto
generated="$out/modelserver/protos/open_inference_pb2.py"
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/_POOL = _descriptor_pool.DescriptorPool()  # not the default pool: see scripts\/generate_grpc.sh\nDESCRIPTOR = _POOL.AddSerializedFile(/' "$generated"
grep -q '^DESCRIPTOR = _POOL.AddSerializedFile(' "$generated" || {
    echo "generate_grpc.sh: protoc's output changed; the private descriptor pool was not set" >&2
    exit 1
}
