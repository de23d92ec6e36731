"""The Open Inference Protocol's gRPC messages: open_inference.proto and the modules
generated from it by scripts/generate_grpc.sh (never edited by hand)."""
