"""Train the sample models from data sets bundled with scikit-learn, deterministically.

    python examples/train_models.py --output examples/models

Writes each artifact with a `<artifact>.sha256` file beside it (the hex digest only):
  xgb-classifier.ubj               XGBoost binary classifier, breast cancer data, 30 features
  xgb-regressor.ubj                XGBoost regressor, diabetes data, 10 features
  sklearn-pipeline.skops           scaler + logistic regression (skops), iris, 3 classes
  sklearn-categorical.skops        a pipeline fitted on a DataFrame (skops): scaled numbers
                                   and a one-hot encoded text column `sex`; diabetes data,
                                   binary (progression above the median)
  xgb-categorical.ubj              XGBoost on the same DataFrame, `sex` a categorical feature
  sample-columns-request.json      a V2 infer body of named columns (content_type pd) for both
  xgb-classifier-bad-features.ubj  like xgb-classifier but expects 20 features, so the
                                   stable's requests get 4xx from it (canary tests)
  xgb-classifier-slow.ubj          the same predictions as xgb-classifier from 600 times
                                   the trees: genuinely slow (canary latency tests)
  xgb-classifier-shifted.ubj       like xgb-classifier but trained only on the larger
                                   tumours: it predicts other classes on the same inputs
                                   (prediction drift tests)
  xgb-classifier-weak.ubj          like xgb-classifier but trained with a fifth of the
                                   labels flipped: measurably less accurate (quality tests)
  sample-request.json              a V2 infer body with rows of the breast cancer data

and, for every model but the bad-features, slow and categorical ones, its reference
profile on its training data with its reference quality (`modelserver profile`,
docs/server.md) as `<artifact>.profile.json`, with a .sha256 file too.
"""

import argparse
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import skops.io
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelserver.model import Model
from modelserver.profile import profile_json
from modelserver.profile_build import build_profile
from modelserver.sklearn_model import load_skops
from modelserver.xgboost_model import load_xgboost

SEED = 0
BAD_FEATURE_COUNT = 20
SLOW_MODEL_COPIES = 600
SAMPLE_ROWS = 4
FLIPPED_LABEL_SHARE = 0.2


def write_with_digest(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    path.with_name(path.name + ".sha256").write_text(
        hashlib.sha256(content).hexdigest() + "\n", encoding="ascii"
    )


def booster_bytes(model: xgboost.XGBModel) -> bytes:
    return bytes(model.get_booster().save_raw("ubj"))


def train_classifier(features: npt.NDArray[np.float64], labels: npt.NDArray[Any]) -> bytes:
    classifier = xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1, random_state=SEED)
    return booster_bytes(classifier.fit(features, labels))


def train_regressor(features: npt.NDArray[np.float64], target: npt.NDArray[np.float64]) -> bytes:
    regressor = xgboost.XGBRegressor(n_estimators=100, max_depth=4, n_jobs=1, random_state=SEED)
    return booster_bytes(regressor.fit(features, target))


def train_pipeline(features: npt.NDArray[np.float64], labels: npt.NDArray[Any]) -> bytes:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return reproducible_skops(skops.io.dumps(pipeline.fit(features, labels)))


def diabetes_table() -> tuple[pd.DataFrame, npt.NDArray[np.int64]]:
    """The diabetes data as a DataFrame whose `sex` is text, and a binary target: disease
    progression above the median."""
    diabetes = load_diabetes(as_frame=True)
    table = diabetes.data.copy()
    # The data set codes sex as one of two scaled numbers; as text it is a category.
    table["sex"] = pd.Series(np.where(table["sex"] > 0, "male", "female"), dtype=object)
    target = diabetes.target.to_numpy()
    return table, (target > np.median(target)).astype(np.int64)


def train_categorical_pipeline(table: pd.DataFrame, labels: npt.NDArray[Any]) -> bytes:
    """Numbers scaled, the text column one-hot encoded (an unknown category is an error),
    selected by name: the pipeline takes a DataFrame only."""
    numbers = [name for name in table.columns if name != "sex"]
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), numbers),
            ("sex", OneHotEncoder(handle_unknown="error"), ["sex"]),
        ]
    )
    pipeline = make_pipeline(columns, LogisticRegression(max_iter=500))
    return reproducible_skops(skops.io.dumps(pipeline.fit(table, labels)))


def train_categorical_xgboost(table: pd.DataFrame, labels: npt.NDArray[Any]) -> bytes:
    """XGBoost with `sex` a categorical feature; the model stores its categories."""
    categorical = table.assign(sex=table["sex"].astype("category"))
    classifier = xgboost.XGBClassifier(
        n_estimators=50, max_depth=4, n_jobs=1, random_state=SEED, enable_categorical=True
    )
    return booster_bytes(classifier.fit(categorical, labels))


def columns_request(table: pd.DataFrame) -> bytes:
    """A V2 infer body with one input per column (MLServer's pandas convention)."""
    rows = table.head(SAMPLE_ROWS)
    inputs = [
        {
            "name": name,
            "shape": [len(rows), 1],
            "datatype": "BYTES" if name == "sex" else "FP64",
            "data": rows[name].tolist(),
        }
        for name in rows.columns
    ]
    body = {"id": "sample-columns-request", "parameters": {"content_type": "pd"}, "inputs": inputs}
    return json.dumps(body, indent=2).encode() + b"\n"


def larger_tumours(features: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Rows whose mean radius (column 0) is above the median: a shifted training subset."""
    return np.asarray(features[:, 0] > np.median(features[:, 0]))


def flipped(labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The binary labels with a fixed random share of them flipped."""
    rng = np.random.default_rng(SEED)
    flip = rng.random(len(labels)) < FLIPPED_LABEL_SHARE
    return np.where(flip, 1 - labels, labels)


def write_profile(
    artifact: Path,
    model: Model,
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[Any],
    names: list[str],
) -> None:
    """The reference profile of the artifact just written, on its training data."""
    digest = artifact.with_name(artifact.name + ".sha256").read_text(encoding="ascii").strip()
    profile = build_profile(model, features, labels=labels, names=names, model_sha256=digest)
    write_with_digest(artifact.with_name(artifact.stem + ".profile.json"), profile_json(profile))


def write_xgboost_with_profile(
    path: Path,
    content: bytes,
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[Any],
    names: list[str],
) -> None:
    write_with_digest(path, content)
    write_profile(path, load_xgboost(path, threads=1), features, labels, names)


def reproducible_skops(archive: bytes) -> bytes:
    """The same skops archive, with the same bytes on every run.

    skops names array files and shared objects after memory addresses (id()) and stamps
    entries with the current time; renumber both in schema order and fix the timestamps.
    """
    output = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as source,
        zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        schema = source.read("schema.json").decode()
        arrays = [name for name in source.namelist() if name != "schema.json"]
        arrays.sort(key=lambda name: schema.index(f'"{name}"'))
        renamed = {name: f"{number}.npy" for number, name in enumerate(arrays)}
        for old, new in renamed.items():
            schema = schema.replace(f'"{old}"', f'"{new}"')
        object_ids: dict[str, str] = {}
        schema = re.sub(
            r'"__id__": (\d+)',
            lambda match: f'"__id__": {object_ids.setdefault(match[1], str(len(object_ids)))}',
            schema,
        )
        entries = [("schema.json", schema.encode())]
        entries += [(renamed[name], source.read(name)) for name in arrays]
        for name, content in entries:
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, content)
    return output.getvalue()


def slow_copy(classifier_ubj: bytes, copies: int) -> bytes:
    """The same model with every tree repeated `copies` times, each leaf divided by `copies`.

    The sum of leaves (the margin) stays the same up to rounding, so predictions match the
    original, but predicting walks `copies` times as many trees.
    """
    booster = xgboost.Booster()
    booster.load_model(bytearray(classifier_ubj))
    document = json.loads(bytes(booster.save_raw("json")))
    trees_model = document["learner"]["gradient_booster"]["model"]
    scaled_trees = [_scale_leaves(tree, 1.0 / copies) for tree in trees_model["trees"]]
    trees = [dict(tree) for _ in range(copies) for tree in scaled_trees]
    for tree_id, tree in enumerate(trees):
        tree["id"] = tree_id
    trees_model["trees"] = trees
    trees_model["tree_info"] = [0] * len(trees)
    trees_model["iteration_indptr"] = list(range(len(trees) + 1))
    trees_model["gbtree_model_param"]["num_trees"] = str(len(trees))
    slow = xgboost.Booster()
    slow.load_model(bytearray(json.dumps(document).encode()))
    return bytes(slow.save_raw("ubj"))


def _scale_leaves(tree: dict[str, Any], factor: float) -> dict[str, Any]:
    is_leaf = np.asarray(tree["left_children"]) == -1
    scaled = dict(tree)
    for key in ("split_conditions", "base_weights"):  # a leaf's value is stored in both
        values = np.asarray(tree[key], dtype=np.float64)
        values[is_leaf] *= factor
        scaled[key] = values.tolist()
    return scaled


def sample_request(features: npt.NDArray[np.float64]) -> bytes:
    rows = features[:SAMPLE_ROWS].astype(np.float32)
    body = {
        "id": "sample-request",
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.tolist(),
            }
        ],
    }
    return json.dumps(body, indent=2).encode() + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="directory for the models")
    output: Path = parser.parse_args().output
    output.mkdir(parents=True, exist_ok=True)

    cancer = load_breast_cancer()
    features, labels, names = cancer.data, cancer.target, list(cancer.feature_names)
    classifier = train_classifier(features, labels)
    write_xgboost_with_profile(output / "xgb-classifier.ubj", classifier, features, labels, names)
    write_with_digest(
        output / "xgb-classifier-bad-features.ubj",
        train_classifier(features[:, :BAD_FEATURE_COUNT], labels),
    )
    write_with_digest(output / "xgb-classifier-slow.ubj", slow_copy(classifier, SLOW_MODEL_COPIES))
    shifted = larger_tumours(features)
    write_xgboost_with_profile(
        output / "xgb-classifier-shifted.ubj",
        train_classifier(features[shifted], labels[shifted]),
        features[shifted],
        labels[shifted],
        names,
    )
    write_xgboost_with_profile(
        output / "xgb-classifier-weak.ubj",
        train_classifier(features, flipped(labels)),
        features,
        labels,
        names,
    )
    diabetes = load_diabetes()
    write_xgboost_with_profile(
        output / "xgb-regressor.ubj",
        train_regressor(diabetes.data, diabetes.target),
        diabetes.data,
        diabetes.target,
        list(diabetes.feature_names),
    )
    iris = load_iris()
    pipeline = output / "sklearn-pipeline.skops"
    write_with_digest(pipeline, train_pipeline(iris.data, iris.target))
    write_profile(
        pipeline, load_skops(pipeline, []), iris.data, iris.target, list(iris.feature_names)
    )
    (output / "sample-request.json").write_bytes(sample_request(features))
    table, progressed = diabetes_table()
    write_with_digest(
        output / "sklearn-categorical.skops", train_categorical_pipeline(table, progressed)
    )
    write_with_digest(output / "xgb-categorical.ubj", train_categorical_xgboost(table, progressed))
    (output / "sample-columns-request.json").write_bytes(columns_request(table))
    print(f"sample models written to {output}")


if __name__ == "__main__":
    main()
