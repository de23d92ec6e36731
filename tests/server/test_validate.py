"""`modelserver validate` against real modelserver processes on 127.0.0.1: every metric
against scikit-learn on the same models loaded in process, every dataset format, and the
errors a user meets (wrong model, wrong metric, unreachable endpoint)."""

import json
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost
from arro3.core import Array, Table
from arro3.io import write_parquet
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from modelserver.model import Model
from modelserver.sklearn_model import load_skops
from modelserver.validate import ValidateSettings, run
from modelserver.validate import main as validate_main
from modelserver.validate_errors import ValidateError
from modelserver.xgboost_model import load_xgboost
from tests.server.server_process import COMMAND, free_port, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LABEL = "label"


# --- models and the servers that serve them -----------------------------------------------


def train_weak_named_classifier(path: Path) -> None:
    """A poorer breast cancer classifier than the sample one, naming its features f0..f29."""
    features, labels = load_breast_cancer(return_X_y=True)
    weak = xgboost.XGBClassifier(n_estimators=2, max_depth=1, n_jobs=1, random_state=0)
    booster = weak.fit(features, labels).get_booster()
    booster.feature_names = [f"f{i}" for i in range(features.shape[1])]
    booster.save_model(path)


def train_hinge_classifier(path: Path) -> None:
    """A binary classifier that answers classes only (no probabilities)."""
    features, labels = load_breast_cancer(return_X_y=True)
    hinge = xgboost.XGBClassifier(
        n_estimators=5, max_depth=2, objective="binary:hinge", n_jobs=1, random_state=0
    )
    hinge.fit(features, labels).get_booster().save_model(path)


class Servers:
    """One modelserver process per sample model, started on first use, kept for the module."""

    def __init__(self, models_dir: Path, workdir: Path, stack: ExitStack) -> None:
        self.models_dir = models_dir
        self.workdir = workdir
        self._stack = stack
        self._urls: dict[str, str] = {}

    def model_file(self, name: str) -> Path:
        trained = {"weak.ubj": train_weak_named_classifier, "hinge.ubj": train_hinge_classifier}
        if name not in trained:
            return self.models_dir / name
        path = self.workdir / name
        if not path.exists():
            trained[name](path)
        return path

    def url(self, name: str) -> str:
        """The V2 URL of the model in file `name` (served under its file name stem)."""
        if name not in self._urls:
            path = self.model_file(name)
            model_format = "sklearn" if path.suffix == ".skops" else "xgboost"
            args = ["--model-uri", str(path), "--model-format", model_format]
            args += ["--cache-dir", str(self.workdir / "cache"), "--model-version", "7"]
            server = self._stack.enter_context(running_server(args, self.workdir))
            self._urls[name] = f"{server.url}/v2/models/{path.stem}/versions/7"
        return self._urls[name]

    def model(self, name: str) -> Model:
        path = self.model_file(name)
        if path.suffix == ".skops":
            return load_skops(path, [])
        return load_xgboost(path, 1)


@pytest.fixture(scope="module")
def servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with ExitStack() as stack:
        yield Servers(models_dir, tmp_path_factory.mktemp("validate"), stack)


# --- datasets ---------------------------------------------------------------------------------


def columns_of(features: np.ndarray, labels: np.ndarray) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        f"f{i}": features[:, i].tolist() for i in range(features.shape[1])
    }
    columns[LABEL] = labels.tolist()
    return columns


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    names = list(columns)
    lines = [",".join(names)]
    for row in zip(*columns.values(), strict=True):
        lines.append(",".join("" if value is None else repr(value) for value in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, columns: dict[str, list[Any]]) -> Path:
    names = list(columns)
    rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet_file(path: Path, columns: dict[str, list[Any]]) -> Path:
    table = Table.from_pydict({name: Array(np.asarray(values)) for name, values in columns.items()})
    write_parquet(table, path, compression="zstd(3)")
    return path


WRITERS: dict[str, Callable[[Path, dict[str, list[Any]]], Path]] = {
    "csv": write_csv,
    "jsonl": write_jsonl,
    "parquet": write_parquet_file,
}


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_breast_cancer(return_X_y=True)
    return features, labels


DATASETS = {
    "binary": lambda: load_breast_cancer(return_X_y=True),
    "multiclass": lambda: load_iris(return_X_y=True),
    "regression": lambda: load_diabetes(return_X_y=True),
}


def dataset_file(tmp_path: Path, task: str, data_format: str = "csv") -> Path:
    features, labels = DATASETS[task]()
    return WRITERS[data_format](tmp_path / f"{task}.{data_format}", columns_of(features, labels))


def settings(dataset: Path, metric: str, candidate: str, stable: str | None, **extra: Any):
    values: dict[str, Any] = {
        "dataset_uri": str(dataset),
        "dataset_format": dataset.suffix.lstrip("."),
        "label_column": LABEL,
        "metric": metric,
        "candidate_url": candidate,
        "stable_url": stable,
        "cache_dir": dataset.parent / "cache",
        "request_retries": 1,
    }
    return ValidateSettings(**(values | extra))


def reference(metric: str, model: Model, features: np.ndarray, labels: np.ndarray) -> float:
    """The metric computed by scikit-learn from the model's in-process predictions."""
    prediction = model.predict(features.astype(model.input_dtype))
    proba = prediction.probabilities
    if metric == "accuracy":
        return float(accuracy_score(labels, prediction.values))
    if metric == "f1":
        binary = len(np.unique(labels)) == 2
        return float(f1_score(labels, prediction.values, average="binary" if binary else "macro"))
    if metric == "logLoss":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
            return float(log_loss(labels, proba))
    if metric == "auc":
        assert proba is not None
        if proba.shape[1] == 2:
            return float(roc_auc_score(labels, proba[:, 1]))
        return float(roc_auc_score(labels, proba, multi_class="ovr"))
    if metric == "rmse":
        return float(root_mean_squared_error(labels, prediction.values))
    return float(mean_absolute_error(labels, prediction.values))


# --- results ----------------------------------------------------------------------------------

# task -> (candidate model file, stable model file)
PAIRS = {
    "binary": ("weak.ubj", "xgb-classifier.ubj"),
    "multiclass": ("sklearn-pipeline.skops", "sklearn-pipeline.skops"),
    "regression": ("xgb-regressor.ubj", "xgb-regressor.ubj"),
}


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("binary", "accuracy"),
        ("binary", "auc"),
        ("binary", "f1"),
        ("binary", "logLoss"),
        ("multiclass", "accuracy"),
        ("multiclass", "auc"),
        ("multiclass", "f1"),
        ("multiclass", "logLoss"),
        ("regression", "rmse"),
        ("regression", "mae"),
    ],
)
def test_every_metric_matches_scikit_learn(servers: Servers, tmp_path: Path, task, metric):
    candidate, stable = PAIRS[task]
    result = run(
        settings(
            dataset_file(tmp_path, task),
            metric,
            servers.url(candidate),
            servers.url(stable),
        )
    )
    features, labels = DATASETS[task]()
    assert result["metric"] == metric
    assert result["rows"] == len(labels)
    expected_candidate = reference(metric, servers.model(candidate), features, labels)
    expected_stable = reference(metric, servers.model(stable), features, labels)
    assert result["candidate"] == pytest.approx(expected_candidate, rel=1e-6, abs=1e-9)
    assert result["stable"] == pytest.approx(expected_stable, rel=1e-6, abs=1e-9)


def test_a_weaker_challenger_scores_below_the_champion(servers: Servers, tmp_path: Path):
    result = run(
        settings(
            dataset_file(tmp_path, "binary"),
            "auc",
            servers.url("weak.ubj"),
            servers.url("xgb-classifier.ubj"),
        )
    )
    assert result["candidate"] < result["stable"]


@pytest.mark.parametrize("data_format", ["csv", "jsonl", "parquet"])
def test_every_format_gives_the_same_result(servers: Servers, tmp_path: Path, data_format):
    csv_result = run(
        settings(
            dataset_file(tmp_path, "binary", "csv"),
            "logLoss",
            servers.url("weak.ubj"),
            servers.url("xgb-classifier.ubj"),
        )
    )
    result = run(
        settings(
            dataset_file(tmp_path, "binary", data_format),
            "logLoss",
            servers.url("weak.ubj"),
            servers.url("xgb-classifier.ubj"),
        )
    )
    assert result == csv_result


def test_first_deployment_measures_the_candidate_only(servers: Servers, tmp_path: Path):
    result = run(
        settings(dataset_file(tmp_path, "binary"), "accuracy", servers.url("weak.ubj"), None)
    )
    assert result["stable"] is None
    assert 0.5 < result["candidate"] < 1


def test_batch_size_and_max_rows(servers: Servers, tmp_path: Path):
    dataset = dataset_file(tmp_path, "binary")
    url = servers.url("xgb-classifier.ubj")
    whole = run(settings(dataset, "logLoss", url, None))
    assert run(settings(dataset, "logLoss", url, None, batch_rows=7)) == whole
    first = run(settings(dataset, "logLoss", url, None, max_rows=100))
    features, labels = breast_cancer()
    expected = reference(
        "logLoss", servers.model("xgb-classifier.ubj"), features[:100], labels[:100]
    )
    assert first["rows"] == 100
    assert first["candidate"] == pytest.approx(expected, rel=1e-6)


def test_missing_values_reach_a_model_that_accepts_them(servers: Servers, tmp_path: Path):
    features, labels = breast_cancer()
    columns = columns_of(features, labels)
    columns["f3"][0] = None  # an empty CSV cell
    result = run(
        settings(
            write_csv(tmp_path / "gaps.csv", columns),
            "auc",
            servers.url("xgb-classifier.ubj"),
            None,
        )
    )
    with_nan = features.copy()
    with_nan[0, 3] = np.nan
    expected = reference("auc", servers.model("xgb-classifier.ubj"), with_nan, labels)
    assert result["candidate"] == pytest.approx(expected, rel=1e-6)


def test_named_features_are_picked_by_name_in_the_model_order(servers: Servers, tmp_path: Path):
    features, labels = breast_cancer()
    columns = columns_of(features, labels)
    shuffled = {"id": [f"patient-{i}" for i in range(len(labels))]}
    shuffled |= {name: columns[name] for name in reversed(list(columns))}
    result = run(
        settings(
            write_csv(tmp_path / "shuffled.csv", shuffled), "auc", servers.url("weak.ubj"), None
        )
    )
    expected = reference("auc", servers.model("weak.ubj"), features, labels)
    assert result["candidate"] == pytest.approx(expected, rel=1e-6)


# --- errors -----------------------------------------------------------------------------------


def failure(config: ValidateSettings) -> ValidateError:
    with pytest.raises(ValidateError) as raised:
        run(config)
    return raised.value


def test_a_model_with_another_feature_count_is_named(servers: Servers, tmp_path: Path):
    error = failure(
        settings(
            dataset_file(tmp_path, "binary"),
            "auc",
            servers.url("xgb-classifier-bad-features.ubj"),
            servers.url("xgb-classifier.ubj"),
        )
    )
    assert error.kind == "model"
    assert "the dataset has 30 feature columns" in error.message
    assert "the candidate model takes 20 features" in error.message


@pytest.mark.parametrize(
    ("task", "model", "metric", "expected"),
    [
        ("regression", "xgb-regressor.ubj", "auc", "metric auc needs a classifier"),
        ("binary", "xgb-classifier.ubj", "rmse", "metric rmse is for regressors"),
        ("binary", "hinge.ubj", "logLoss", "metric logLoss needs class probabilities"),
    ],
)
def test_a_metric_the_model_cannot_produce_is_refused(
    servers: Servers, tmp_path: Path, task, model, metric, expected
):
    error = failure(settings(dataset_file(tmp_path, task), metric, servers.url(model), None))
    assert error.kind == "metric"
    assert expected in error.message


def test_a_metric_the_stable_cannot_produce_is_refused_before_rows_are_sent(
    servers: Servers, tmp_path: Path
):
    error = failure(
        settings(
            dataset_file(tmp_path, "binary"),
            "auc",
            servers.url("xgb-classifier.ubj"),
            servers.url("hinge.ubj"),
        )
    )
    assert error.kind == "metric"
    assert "the stable model 'hinge'" in error.message


def test_accuracy_works_for_a_model_without_probabilities(servers: Servers, tmp_path: Path):
    result = run(settings(dataset_file(tmp_path, "binary"), "f1", servers.url("hinge.ubj"), None))
    features, labels = breast_cancer()
    assert result["candidate"] == pytest.approx(
        reference("f1", servers.model("hinge.ubj"), features, labels), rel=1e-9
    )


def test_an_unreachable_endpoint_is_named_after_retries(servers: Servers, tmp_path: Path):
    nobody = f"http://127.0.0.1:{free_port()}/v2/models/xgb-classifier"
    error = failure(
        settings(dataset_file(tmp_path, "binary"), "auc", servers.url("xgb-classifier.ubj"), nobody)
    )
    assert error.kind == "endpoint"
    assert f"the stable endpoint {nobody} failed 2 attempts" in error.message
    assert "ConnectError" in error.message


def test_a_wrong_model_name_or_version_is_a_404_with_the_servers_reason(
    servers: Servers, tmp_path: Path
):
    wrong = servers.url("xgb-classifier.ubj").replace("/versions/7", "/versions/8")
    error = failure(settings(dataset_file(tmp_path, "binary"), "auc", wrong, None))
    assert error.kind == "endpoint"
    assert "the candidate endpoint has no such model" in error.message
    assert "404" in error.message


def test_a_label_that_is_no_class_of_the_model(servers: Servers, tmp_path: Path):
    features, labels = breast_cancer()
    columns = columns_of(features, labels)
    columns[LABEL][4] = 2
    error = failure(
        settings(
            write_csv(tmp_path / "three.csv", columns), "accuracy", servers.url("weak.ubj"), None
        )
    )
    assert error.kind == "dataset"
    assert "row 5 has the label '2', which is not one of the candidate model's classes" in (
        error.message
    )


def test_auc_needs_both_classes(servers: Servers, tmp_path: Path):
    features, labels = breast_cancer()
    positives = labels == 1
    columns = columns_of(features[positives], labels[positives])
    error = failure(
        settings(write_csv(tmp_path / "one.csv", columns), "auc", servers.url("weak.ubj"), None)
    )
    assert error.kind == "dataset"
    assert "auc needs rows of every class, and no row has the label 0" in error.message


def test_values_the_model_refuses_are_the_models_doing(servers: Servers, tmp_path: Path):
    features, labels = load_iris(return_X_y=True)
    columns = columns_of(features, labels)
    columns["f1"][2] = None  # the scikit-learn pipeline takes no missing values
    error = failure(
        settings(
            write_csv(tmp_path / "gap.csv", columns),
            "accuracy",
            servers.url("sklearn-pipeline.skops"),
            None,
        )
    )
    assert error.kind == "model"
    assert "the candidate model" in error.message
    assert "row 2, column 1 is NaN" in error.message


# --- the command ------------------------------------------------------------------------------


def validate(args: list[str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [COMMAND, "validate", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    return done.returncode, done.stdout, done.stderr


def test_the_command_writes_one_json_line_and_exits_0(servers: Servers, tmp_path: Path):
    termination = tmp_path / "termination-log"
    code, stdout, _ = validate(
        [
            f"--dataset-uri={dataset_file(tmp_path, 'regression', 'parquet')}",
            "--dataset-format=parquet",
            f"--label-column={LABEL}",
            "--metric=rmse",
            f"--candidate-url={servers.url('xgb-regressor.ubj')}",
            f"--stable-url={servers.url('xgb-regressor.ubj')}",
            f"--termination-log={termination}",
            f"--cache-dir={tmp_path}",
        ],
        tmp_path,
    )
    assert code == 0
    line = json.loads(termination.read_text())
    assert stdout == termination.read_text()
    assert set(line) == {"metric", "candidate", "stable", "rows"}
    assert line["metric"] == "rmse"
    assert line["candidate"] == line["stable"]
    assert line["rows"] == 442


def test_the_command_reports_an_error_line_and_exits_1(tmp_path: Path):
    termination = tmp_path / "termination-log"
    dataset = dataset_file(tmp_path, "binary")
    code, stdout, stderr = validate(
        [
            f"--dataset-uri={dataset}",
            "--dataset-format=csv",
            "--label-column=diagnosis",
            "--metric=auc",
            f"--candidate-url=http://127.0.0.1:{free_port()}/v2/models/m",
            f"--termination-log={termination}",
        ],
        tmp_path,
    )
    assert code == 1
    line = json.loads(termination.read_text())
    assert line["kind"] == "dataset"
    assert line["error"].startswith("label column 'diagnosis' not found")
    assert json.loads(stdout) == line
    assert "modelserver validate: label column 'diagnosis' not found" in stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--metric=precision"], "metric: Input should be 'accuracy', 'auc', 'f1'"),
        (["--dataset-uri=https://example.invalid/data.csv"], "needs --dataset-sha256"),
        (["--candidate-url=http://127.0.0.1:9/predict"], "is not a model's V2 URL"),
        (["--dataset-sha256=abc"], "must be 64 hexadecimal characters"),
        (["--no-such-flag=1"], "unrecognized arguments: --no-such-flag=1"),
    ],
)
def test_bad_arguments_are_a_config_error(tmp_path: Path, capsys, args, expected):
    base = {
        "--dataset-uri": "data.csv",
        "--dataset-format": "csv",
        "--label-column": LABEL,
        "--metric": "auc",
        "--candidate-url": "http://127.0.0.1:9/v2/models/m",
    }
    arguments = [f"{key}={value}" for key, value in base.items() if key not in str(args)]
    with pytest.raises(SystemExit) as exited:
        validate_main([*arguments, *args])
    assert exited.value.code == 1
    line = json.loads(capsys.readouterr().out)
    assert line["kind"] == "config"
    assert expected in line["error"]
