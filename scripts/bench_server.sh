#!/usr/bin/env bash
# Benchmark: modelserver vs MLServer 1.7.1 serving the same XGBoost model on 127.0.0.1,
# both driven by wrk (V2 infer, 1 and 100 rows, concurrency 1, 8, 32), plus the floors
# (in-process predict, a constant FastAPI reply); then modelserver with the model's
# reference profile vs without (1 and 100 rows, c=8, interleaved rounds) and the memory
# its feedback path holds; then modelserver mirroring every request to a shadow vs not,
# both driven at once (wrk at saturation, vegeta at a constant rate for p99), and the copies
# it drops under overload; then modelserver vs MLServer over gRPC, driven by ghz
# (1 and 100 rows, c=8 and 32, interleaved rounds), and our gRPC driven by h2load vs our
# REST driven by wrk. Run through `make bench-server`.
#
# MLServer goes into its own virtual environment under the cache directory (outside the
# repository); nothing of it is committed. Variables:
#   BENCH_SECONDS                 wrk duration of each run (default 10)
#   BENCH_SECTIONS                "mlserver ceiling profile mirror grpc" (default), or some of them
#   BENCH_PROFILE_ROUNDS          rounds of the profile comparison (default 5)
#   BENCH_MIRROR_ROUNDS           rounds of the mirror comparison (default 5)
#   BENCH_GRPC_ROUNDS             rounds of the grpc comparison (default 3)
#   MODELDEPLOY_CACHE             cache directory (default ~/.cache/modeldeploy)
#   MLSERVER_TUNED_WORKERS        workers of both servers in the tuned comparison (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
MLSERVER_VENV="$CACHE/mlserver-venv"
MLSERVER_PACKAGES=(mlserver==1.7.1 mlserver-xgboost==1.7.1 "uvloop==0.21.0")
MODEL=examples/models/xgb-classifier.ubj
read -r -a SECTIONS <<<"${BENCH_SECTIONS:-mlserver ceiling profile mirror grpc}"

# wrk drives REST; h2load (nghttp2-client), in C like wrk, drives our gRPC against it.
MISSING=()
command -v wrk >/dev/null 2>&1 || MISSING+=(wrk)
if [[ " ${SECTIONS[*]} " == *" grpc "* ]] && ! command -v h2load >/dev/null 2>&1; then
    MISSING+=(nghttp2-client)
fi
if [ "${#MISSING[@]}" -gt 0 ]; then
    echo "installing ${MISSING[*]} from Debian's packages"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${MISSING[@]}"
fi

# uvloop 0.21.0: with a newer uvloop MLServer's inference worker fails to start
# ("There is no current event loop").
if [[ " ${SECTIONS[*]} " =~ " "(mlserver|grpc)" " ]] && [ ! -x "$MLSERVER_VENV/bin/mlserver" ]; then
    echo "creating the MLServer environment in $MLSERVER_VENV"
    mkdir -p "$CACHE"
    uv venv --quiet --python 3.11 "$MLSERVER_VENV"
    VIRTUAL_ENV="$MLSERVER_VENV" uv pip install --quiet "${MLSERVER_PACKAGES[@]}"
fi

if [ ! -f "$MODEL" ] || [ ! -f "${MODEL%.ubj}.profile.json" ]; then
    uv run --locked python examples/train_models.py --output examples/models
fi

# ghz (gRPC) and vegeta (open-loop HTTP), built from their Go modules on first use.
GRPC_ARGS=()
if [[ " ${SECTIONS[*]} " == *" grpc "* ]]; then
    GRPC_ARGS=(--ghz "$(scripts/go-tool.sh ghz)" --grpc-rounds "${BENCH_GRPC_ROUNDS:-3}")
fi
MIRROR_ARGS=()
if [[ " ${SECTIONS[*]} " == *" mirror "* ]]; then
    MIRROR_ARGS=(--vegeta "$(scripts/go-tool.sh vegeta)")
fi

# As a module, so that run.py imports its sections as the rest of scripts/ does.
exec uv run --locked python -m scripts.bench_server.run \
    --model "$MODEL" \
    --sections "${SECTIONS[@]}" \
    --mlserver-venv "$MLSERVER_VENV" \
    --seconds "${BENCH_SECONDS:-10}" \
    --mlserver-tuned-workers "${MLSERVER_TUNED_WORKERS:-1}" \
    --profile-rounds "${BENCH_PROFILE_ROUNDS:-5}" \
    --mirror-rounds "${BENCH_MIRROR_ROUNDS:-5}" \
    "${GRPC_ARGS[@]}" \
    "${MIRROR_ARGS[@]}"
