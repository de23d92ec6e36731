"""`modelserver validate` in the server image, run as the validation Job runs it: its own
non-root user, a read-only root, the dataset mounted read-only, a Parquet file read by the
native arro3 libraries, a real modelserver answering on 127.0.0.1 (marker ``images``)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arro3.core import Array, Table
from arro3.io import write_parquet
from sklearn.datasets import load_breast_cancer

from tests.images.test_images import Container, _unpack, archives, models  # noqa: F401
from tests.server.server_process import running_server

pytestmark = pytest.mark.images

DATASET_MOUNT = "/mnt/dataset"  # where the Job mounts a pvc:// dataset


def test_the_image_validates_a_parquet_hold_out_set(archives, models, tmp_path: Path):  # noqa: F811
    (tmp_path / "image").mkdir()
    image = _unpack(archives["modelserver"], tmp_path / "image")
    data = tmp_path / "data"
    data.mkdir()
    features, labels = load_breast_cancer(return_X_y=True)
    columns: dict[str, Any] = {
        f"f{i}": Array(np.ascontiguousarray(features[:, i])) for i in range(30)
    }
    columns["label"] = Array(labels.astype(np.int64))
    write_parquet(Table.from_pydict(columns), data / "holdout.parquet", compression="snappy")
    data.chmod(0o755)
    args = ["--model-uri", str(models / "xgb-classifier.ubj"), "--cache-dir", str(tmp_path)]
    with running_server(args, tmp_path) as server:
        code, output = Container(
            image,
            tmp_path,
            args=[
                "modelserver",
                "validate",
                f"--dataset-uri={DATASET_MOUNT}/holdout.parquet",
                "--dataset-format=parquet",
                "--label-column=label",
                "--metric=auc",
                f"--candidate-url={server.url}/v2/models/xgb-classifier/versions/1",
                f"--stable-url={server.url}/v2/models/xgb-classifier",
                "--termination-log=/tmp/termination-log",
            ],
            binds={DATASET_MOUNT: data},
            writable=("/tmp", "/var/cache/modelserver"),
            host_network=True,
        ).run()
    assert code == 0, output
    result = json.loads(output.strip().splitlines()[-1])
    assert result["metric"] == "auc"
    assert result["rows"] == len(labels)
    assert result["candidate"] == result["stable"]
    assert 0.99 < result["candidate"] <= 1
