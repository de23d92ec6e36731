# Every target that needs Python goes through uv and the committed lock file.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV_RUN := uv run --locked

CRD_FILE := crds/modeldeploy.dev_modeldeployments.yaml

.PHONY: help uv sync tools test test-images test-unit test-integration lint format crds grpc-stubs models \
        cluster cluster-down demo bench bench-server bench-operator bench-rollback

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

uv: ## install uv from PyPI when it is missing
	@command -v uv >/dev/null 2>&1 || { echo "installing uv from PyPI"; python3 -m pip install --user --quiet uv; }

sync: uv ## create the locked environment in .venv
	uv sync --locked

tools: ## install the programs the tests run (Prometheus) when missing
	@scripts/ensure-tools.sh

test: sync models tools test-images ## run every test, the integration tests against a real local cluster included
	$(UV_RUN) pytest

# The images the image and node tests run; where they cannot be built (no root, not
# Linux) those tests skip with the reason, and with CI=true they fail instead.
test-images:
	@scripts/images.sh --when-possible

test-unit: sync models ## run the unit tests only
	$(UV_RUN) pytest tests/unit

test-integration: sync models tools ## run the integration tests only
	$(UV_RUN) pytest -m integration tests/integration

lint: sync ## ruff, mypy, and actionlint on .github/workflows (built from its Go module on first use)
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	$(UV_RUN) mypy operator/modeldeploy server_image/modelserver tests scripts examples
	@scripts/actionlint.sh

format: sync
	$(UV_RUN) ruff check --fix .
	$(UV_RUN) ruff format .

grpc-stubs: sync ## regenerate the gRPC messages of server_image/modelserver/protos from the .proto
	scripts/generate_grpc.sh

crds: sync ## regenerate crds/ from operator/modeldeploy/api.py
	$(UV_RUN) python -m modeldeploy.crdgen --output $(CRD_FILE)
	$(UV_RUN) python -m modeldeploy.crdgen --chart --output charts/modeldeploy/files/crds/modeldeploy.dev_modeldeployments.yaml

.PHONY: chart
chart: ## helm lint and helm template of charts/modeldeploy, with the pinned helm
	@eval "$$(scripts/build-binaries.sh)" && \
	"$$HELM_BIN" lint --strict charts/modeldeploy && \
	"$$HELM_BIN" template modeldeploy charts/modeldeploy --namespace modeldeploy-system >/dev/null && \
	"$$HELM_BIN" template modeldeploy charts/modeldeploy --namespace modeldeploy-system \
	    --set 'watchNamespaces={team-a,team-b}' >/dev/null && \
	echo "charts/modeldeploy: lint and template OK"

.PHONY: images
images: ## build the operator and server images with buildah, no Docker or registry (docs/images.md)
	@scripts/images.sh

models: sync ## train the sample models into examples/models/
	$(UV_RUN) python examples/train_models.py --output examples/models

cluster: sync ## start a local cluster (with a real node where this machine can run one; MODELDEPLOY_REAL_NODE=0: without) and print its kubeconfig path
	@scripts/cluster.sh up

cluster-down: ## stop the local cluster, its real node too, and undo its changes to the host
	@scripts/cluster.sh down

# Where the images can be built (root on Linux), the demo's pods run them on the real node;
# elsewhere test-images skips with one line and the demo runs its process harness.
demo: sync models tools test-images ## serve a model, promote a good version, roll a bad one back
	$(UV_RUN) python -m scripts.demo

bench: bench-server bench-operator bench-rollback ## every benchmark

bench-server: sync models ## our server vs MLServer, side by side
	scripts/bench_server.sh

bench-operator: sync ## 300 ModelDeployments on the local cluster
	$(UV_RUN) python -m scripts.bench_operator

bench-rollback: sync models tools ## time from first bad request to traffic back on stable
	$(UV_RUN) python -m scripts.bench_rollback
