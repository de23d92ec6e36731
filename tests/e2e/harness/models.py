"""The sample models of `make models`, as ModelDeployment fields and request bodies."""

from __future__ import annotations

import json
from pathlib import Path

MODELS = Path(__file__).resolve().parents[3] / "examples" / "models"
MODEL_NAME = "breast-cancer"  # the data set the sample classifiers were trained on


def artifact(name: str) -> dict[str, str]:
    """`uri` and `sha256` of a sample artifact, for spec.model."""
    path = MODELS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make models`")
    digest = (MODELS / f"{name}.sha256").read_text().split()[0]
    return {"uri": f"file://{path}", "sha256": digest}


def single_row_request() -> bytes:
    """A V2 infer body with the first row of the sample request."""
    body = json.loads((MODELS / "sample-request.json").read_text())
    tensor = body["inputs"][0]
    features = tensor["shape"][1]
    data = tensor["data"]
    first = data[0] if isinstance(data[0], list) else data[:features]
    tensor.update(shape=[1, features], data=[first])
    return json.dumps(body).encode()
