"""`modelserver profile` as a user runs it: CSV, Parquet and .npy data, labels in a column
or a file, the profile a server then accepts, and bad input named with how to fix it."""

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from arro3.core import Array, DataType, Table
from arro3.io import write_parquet
from sklearn.datasets import load_breast_cancer, load_diabetes

from modelserver.loading import load_configured_model
from modelserver.profile import parse_profile
from modelserver.profile_build import build_profile
from tests.server.helpers import make_settings
from tests.server.server_process import COMMAND

CANCER = load_breast_cancer()


def profile_command(*args: str | Path) -> tuple[int, str, str]:
    completed = subprocess.run(
        [COMMAND, "profile", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.returncode, completed.stdout, completed.stderr


def cancer_csv(path: Path, label: bool = True) -> Path:
    with path.open("w", newline="") as output:
        writer = csv.writer(output)
        writer.writerow([*CANCER.feature_names, *(["diagnosis"] if label else [])])
        for row, target in zip(CANCER.data, CANCER.target, strict=True):
            writer.writerow([*row, *([target] if label else [])])
    return path


def test_a_csv_with_its_labels_gives_the_profile_the_sample_models_have(
    models_dir: Path, tmp_path: Path
):
    model = models_dir / "xgb-classifier.ubj"
    out = tmp_path / "profile.json"
    code, stdout, stderr = profile_command(
        "--model", model, "--data", cancer_csv(tmp_path / "train.csv"),
        "--label-column", "diagnosis", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith("profile of 569 rows, 30 features (0 categorical), binary model,")
    assert "reference accuracy 1, AUC 1" in stdout
    assert out.read_bytes() == (models_dir / "xgb-classifier.profile.json").read_bytes()


def test_npy_data_with_a_labels_file(models_dir: Path, tmp_path: Path):
    features, target = load_diabetes(return_X_y=True)
    np.save(tmp_path / "x.npy", features)
    np.save(tmp_path / "y.npy", target)
    out = tmp_path / "profile.json"
    code, stdout, stderr = profile_command(
        "--model", models_dir / "xgb-regressor.ubj", "--data", tmp_path / "x.npy",
        "--labels", tmp_path / "y.npy", "--bins", "5", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    profile = parse_profile(out.read_bytes(), str(out))
    assert [feature.name for feature in profile.features][:2] == ["f0", "f1"]
    assert profile.features[0].binning.bins == ["0", "1", "2", "3", "4", "missing"]
    assert profile.quality is not None
    assert profile.quality.mae is not None
    assert f"MAE {profile.quality.mae:.4g}" in stdout


def test_a_parquet_text_column_is_profiled_as_its_codes(models_dir: Path, tmp_path: Path):
    """The model receives codes; the profile keeps their texts and the command shows them."""
    sizes = np.asarray(["a-small", "b-medium", "c-large"])
    codes = np.digitize(CANCER.data[:, 0], [12, 16])
    columns = {
        str(name): Array(CANCER.data[:, i], DataType.float64())
        for i, name in enumerate(CANCER.feature_names)
    }
    columns["mean radius"] = Array(sizes[codes].tolist(), DataType.string())
    columns["diagnosis"] = Array(CANCER.target.astype(np.int64), DataType.int64())
    write_parquet(
        Table.from_arrays(list(columns.values()), names=list(columns)), tmp_path / "train.parquet"
    )
    model = models_dir / "xgb-classifier.ubj"
    out = tmp_path / "profile.json"
    code, _, stderr = profile_command(
        "--model", model, "--data", tmp_path / "train.parquet", "--label-column", "diagnosis",
        "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert "column 'mean radius' holds text" in stderr
    assert "a-small=0, b-medium=1, c-large=2" in stderr
    radius = parse_profile(out.read_bytes(), "p").features[0].binning
    assert radius.kind == "categories"
    assert dict(zip(radius.labels or [], radius.values, strict=True)) == {
        "a-small": 0.0,
        "b-medium": 1.0,
        "c-large": 2.0,
    }
    coded = CANCER.data.copy()
    coded[:, 0] = codes
    expected = build_profile(
        load_configured_model(make_settings(model)).model,
        coded,
        names=list(CANCER.feature_names),
        categorical=["mean radius"],
    )
    assert radius.values == expected.features[0].binning.values  # type: ignore[union-attr]
    assert radius.proportions == expected.features[0].binning.proportions


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (
            ["--data", "NOLABEL"],
            "the data has 31 feature columns, the model takes 30; is one of them the label",
        ),
        (
            ["--data", "LABELLED", "--label-column", "outcome"],
            "has no column 'outcome'; its columns are: mean radius, mean texture",
        ),
        (["--data", "MISSING"], "cannot read"),
        (["--data", "LABELLED", "--label-column", "diagnosis", "--bins", "1"], "bins must be"),
        (["--data", "TEXT_LABELS", "--label-column", "diagnosis"], "label 'benign' at row 1"),
    ],
)
def test_bad_input_exits_1_with_what_to_fix(
    models_dir: Path, tmp_path: Path, arguments: list[str], reason: str
):
    labelled = cancer_csv(tmp_path / "labelled.csv")
    text_labels = tmp_path / "text.csv"
    text_labels.write_text(labelled.read_text().replace(",0\n", ",benign\n"))
    files = {
        "NOLABEL": labelled,
        "LABELLED": labelled,
        "MISSING": tmp_path / "absent.csv",
        "TEXT_LABELS": text_labels,
    }
    args = [str(files.get(argument, argument)) for argument in arguments]
    out = tmp_path / "profile.json"
    code, stdout, stderr = profile_command(
        "--model", models_dir / "xgb-classifier.ubj", *args, "--out", out
    )
    assert code == 1
    assert stdout == ""
    assert stderr.startswith("modelserver profile: ")
    assert reason in stderr
    assert not out.exists()


def test_a_model_that_cannot_load_is_named(tmp_path: Path):
    broken = tmp_path / "model.ubj"
    broken.write_bytes(b"not a model")
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    code, _, stderr = profile_command(
        "--model", broken, "--data", tmp_path / "x.npy", "--out", tmp_path / "p.json"
    )
    assert code == 1
    assert f"modelserver profile: cannot load XGBoost model {broken}" in stderr
