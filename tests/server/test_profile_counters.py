"""A real `modelserver` process with a reference profile counts every predicted row in the
profile's bins, for its track and version, exports the profile's own shares and quality
in the same series (the operator reads them there), and refuses a profile that is not its
model's."""

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserver.profile import Profile, parse_profile, write_profile
from modelserver.profile_bins import category_bin_index, quantile_bin_index
from tests.server.artifact_server import ArtifactServer
from tests.server.data import breast_cancer_rows, diabetes_rows
from tests.server.helpers import make_settings, serving_app, v2_body
from tests.server.server_process import ServerProcess, run_to_exit, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INFER = "/v2/models/xgb-classifier/infer"
LABELS = {
    "model": "xgb-classifier",
    "model_version": "7",
    "track": "canary",
    "modeldeployment": "xgb-classifier",
    "variant": "",
}


def digest(path: Path) -> str:
    return path.with_name(path.name + ".sha256").read_text().strip()


def profile_args(models_dir: Path, model: str = "xgb-classifier") -> list[str]:
    profile = models_dir / f"{model}.profile.json"
    return ["--profile-uri", str(profile), "--profile-sha256", digest(profile)]


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric by their labels other than the base ones."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                extra = {k: v for k, v in sample.labels.items() if k not in LABELS}
                found[tuple(sorted(extra.items()))] = sample.value
    return found


def scrape(server: ServerProcess) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=5).text


def read_profile(path: Path) -> Profile:
    return parse_profile(path.read_bytes(), str(path))


def by(key: tuple[tuple[str, str], ...], *labels: str) -> tuple[str, ...]:
    named = dict(key)
    return tuple(named[label] for label in labels)


def feature_shares(profile: Profile, features: int) -> dict[tuple[str, ...], float]:
    return {
        (feature.name, name): share
        for feature in profile.features[:features]
        for name, share in zip(feature.binning.bins, feature.binning.proportions, strict=True)
    }


def prediction_shares(profile: Profile) -> dict[tuple[str, ...], float]:
    shares: dict[tuple[str, ...], float] = {}
    for output, bins in (
        ("class", profile.prediction.classes),
        ("score", profile.prediction.score),
    ):
        if bins is not None:
            shares.update(
                {(output, b): p for b, p in zip(bins.bins, bins.proportions, strict=True)}
            )
    return shares


def exported(text: str) -> dict[str, dict[tuple[str, ...], float]]:
    """The profile gauges of a scrape, by their own labels."""
    return {
        "features": {
            by(key, "feature", "bin"): value
            for key, value in series(text, "modelserver_profile_feature_share").items()
        },
        "predictions": {
            by(key, "output", "bin"): value
            for key, value in series(text, "modelserver_profile_prediction_share").items()
        },
        "quality": {
            by(key, "metric"): value
            for key, value in series(text, "modelserver_profile_quality").items()
        },
    }


def expected_feature_counts(profile: Any, rows: np.ndarray) -> dict[tuple[str, str], int]:
    """What the profile's bins make of the rows, feature by feature, as the model sees them."""
    counts: dict[tuple[str, str], int] = {}
    for column, feature in enumerate(profile.features):
        binning = feature.binning
        values = rows[:, column].astype(np.float32).astype(np.float64)
        if binning.kind == "quantile":
            index = quantile_bin_index(np.asarray(binning.edges), values)
        else:
            index = category_bin_index(np.asarray(binning.values), values)
        tally = np.bincount(index, minlength=len(binning.bins))
        counts.update({(feature.name, name): int(tally[i]) for i, name in enumerate(binning.bins)})
    return counts


@pytest.fixture(scope="module")
def profiled_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The classifier, its profile fetched over http with its pin like a model."""
    tmp_path = tmp_path_factory.mktemp("profiled")
    profile = models_dir / "xgb-classifier.profile.json"
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj"), "--model-version", "7"]
    args += ["--track", "canary", "--cache-dir", str(tmp_path / "cache")]
    with ArtifactServer(models_dir) as artifacts:
        args += ["--profile-uri", f"{artifacts.url}/{profile.name}"]
        args += ["--profile-sha256", digest(profile)]
        with running_server(args, tmp_path) as server:
            yield server


def test_every_predicted_row_is_counted_in_the_profiles_bins(
    profiled_server: ServerProcess, models_dir: Path
):
    profile = parse_profile((models_dir / "xgb-classifier.profile.json").read_bytes(), "p")
    before = scrape(profiled_server)
    rows = breast_cancer_rows(150)
    rows[3, 5] = rows[120, 5] = np.nan  # missing values, sent as NaN
    outputs = []
    with httpx.Client(base_url=profiled_server.url, timeout=10) as client:
        answer = client.post(INFER, content=json.dumps(v2_body(rows[:100].tolist())))
        outputs.append(answer.json()["outputs"])
        v1 = client.post(
            "/v1/models/xgb-classifier:predict",
            content=json.dumps({"instances": rows[100:].tolist()}),
        )
        assert v1.status_code == 200
        refused = client.post(INFER, json=v2_body(rows[10:15, :29].tolist()))
        assert refused.status_code == 422, "refused rows are not counted"
    after = scrape(profiled_server)

    def increase(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        earlier = series(before, name)
        return {key: value - earlier.get(key, 0) for key, value in series(after, name).items()}

    features = increase("modelserver_feature_bin_total")
    expected = expected_feature_counts(profile, rows)
    assert {(dict(k)["feature"], dict(k)["bin"]): v for k, v in features.items()} == expected
    assert features[(("bin", "missing"), ("feature", "mean compactness"))] == 2
    predicted = answer.json()["outputs"][0]["data"] + v1.json()["predictions"]
    classes = increase("modelserver_prediction_class_total")
    assert classes == {
        (("class", "0"),): predicted.count(0),
        (("class", "1"),): predicted.count(1),
        (("class", "other"),): 0,
    }
    assert profile.prediction.score is not None
    scores = np.concatenate(
        [
            np.asarray(answer.json()["outputs"][1]["data"]).reshape(-1, 2)[:, 1],
            np.asarray(v1.json()["probabilities"])[:, 1],
        ]
    ).astype(np.float32)
    score_bins = quantile_bin_index(np.asarray(profile.prediction.score.edges), scores)
    tally = Counter(profile.prediction.score.bins[i] for i in score_bins.tolist())
    assert increase("modelserver_prediction_bin_total") == {
        (("bin", name),): tally.get(name, 0) for name in profile.prediction.score.bins
    }


def test_the_counters_carry_the_track_and_version_and_the_profile_is_named(
    profiled_server: ServerProcess, models_dir: Path
):
    text = scrape(profiled_server)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in ("modelserver_feature_bin", "modelserver_prediction_class"):
        for sample in families[name].samples:
            assert {k: sample.labels[k] for k in LABELS} == LABELS
    (info,) = families["modelserver_profile_info"].samples
    assert info.labels["sha256"] == digest(models_dir / "xgb-classifier.profile.json")
    assert info.labels["features_counted"] == "30"
    assert len(families["modelserver_feature_bin"].samples) == 30 * 11, "all exist from the start"


def test_the_profiles_shares_and_quality_are_exported_in_the_counters_series(
    profiled_server: ServerProcess, models_dir: Path
):
    profile = read_profile(models_dir / "xgb-classifier.profile.json")
    assert profile.quality is not None
    text = scrape(profiled_server)
    gauges = exported(text)
    assert gauges["features"] == feature_shares(profile, 30)
    assert gauges["predictions"] == prediction_shares(profile)
    assert gauges["quality"] == {
        ("accuracy",): profile.quality.accuracy,
        ("auc",): profile.quality.auc,
    }
    # The operator divides counter by gauge series matched on these labels.
    counted_features = series(text, "modelserver_feature_bin_total")
    assert set(gauges["features"]) == {by(key, "feature", "bin") for key in counted_features}
    counted_classes = series(text, "modelserver_prediction_class_total")
    counted_scores = series(text, "modelserver_prediction_bin_total")
    assert set(gauges["predictions"]) == {("class", *by(k, "class")) for k in counted_classes} | {
        ("score", *by(k, "bin")) for k in counted_scores
    }
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in ("feature_share", "prediction_share", "quality"):
        for sample in families[f"modelserver_profile_{name}"].samples:
            assert {k: sample.labels[k] for k in LABELS} == LABELS


def test_a_regressor_exports_the_counted_features_its_value_bins_and_its_mae(
    models_dir: Path, tmp_path: Path
):
    args = ["--model-uri", str(models_dir / "xgb-regressor.ubj"), "--profile-max-features", "2"]
    args += ["--cache-dir", str(tmp_path / "cache"), *profile_args(models_dir, "xgb-regressor")]
    with running_server(args, tmp_path) as server:
        gauges = exported(scrape(server))
    profile = read_profile(models_dir / "xgb-regressor.profile.json")
    assert profile.quality is not None
    assert gauges["features"] == feature_shares(profile, 2), "the cap of the counters"
    assert {output for output, _ in gauges["predictions"]} == {"score"}
    assert gauges["predictions"] == prediction_shares(profile)
    assert gauges["quality"] == {("mae",): profile.quality.mae}


def test_a_profile_without_labels_exports_shares_but_no_quality(models_dir: Path, tmp_path: Path):
    built = read_profile(models_dir / "sklearn-pipeline.profile.json")
    unlabelled = tmp_path / "unlabelled.profile.json"
    write_profile(built.model_copy(update={"quality": None}), unlabelled)
    args = ["--model-uri", str(models_dir / "sklearn-pipeline.skops"), "--model-format", "sklearn"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--profile-uri", str(unlabelled)]
    with running_server(args, tmp_path) as server:
        text = scrape(server)
    gauges = exported(text)
    assert gauges["quality"] == {}
    assert "modelserver_profile_quality" not in text
    shares = prediction_shares(built)
    assert {bin_name for output, bin_name in shares if output == "class"} == {
        "0",
        "1",
        "2",
        "other",
    }
    assert gauges["predictions"] == shares
    assert gauges["features"] == feature_shares(built, 4)


def test_several_workers_count_into_the_same_series(models_dir: Path, tmp_path: Path):
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj"), "--workers", "2"]
    args += ["--cache-dir", str(tmp_path / "cache"), *profile_args(models_dir)]
    with running_server(args, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            assert (
                client.post(INFER, json=v2_body(breast_cancer_rows(5).tolist())).status_code == 200
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            total = sum(series(scrape(server), "modelserver_prediction_class_total").values())
            if total == 100:
                break
            time.sleep(0.2)
        assert total == 100, "each worker's counts reach the shared files within a second or so"
        gauges = exported(scrape(server))
    profile = read_profile(models_dir / "xgb-classifier.profile.json")
    assert gauges["features"] == feature_shares(profile, 30), "one series each, not one per worker"
    assert gauges["predictions"] == prediction_shares(profile)


def test_only_the_first_features_are_counted_up_to_the_cap(models_dir: Path, tmp_path: Path):
    settings = make_settings(
        models_dir / "xgb-regressor.ubj",
        profile_uri=str(models_dir / "xgb-regressor.profile.json"),
        profile_max_features=2,
    )
    with serving_app(settings) as (client, _):
        rows = diabetes_rows(40)
        client.post("/v2/models/xgb-regressor/infer", json=v2_body(rows.tolist(), "FP64"))
        counted = series(client.get("/metrics").text, "modelserver_feature_bin_total")
    assert {dict(key)["feature"] for key in counted} == {"age", "sex"}
    sex = {dict(key)["bin"]: value for key, value in counted.items() if ("feature", "sex") in key}
    assert set(sex) == {"0", "1", "other", "missing"}, "a two-valued feature: category bins"
    assert sum(sex.values()) == 40
    assert sex["other"] == 0


def test_without_a_profile_nothing_is_counted(models_dir: Path):
    with serving_app(make_settings(models_dir / "xgb-classifier.ubj")) as (client, _):
        client.post(INFER, json=v2_body(breast_cancer_rows(3).tolist()))
        text = client.get("/metrics").text
    assert "modelserver_feature_bin_total" not in text
    assert "modelserver_profile_info" not in text
    assert "modelserver_profile_feature_share" not in text
    assert "modelserver_profile_prediction_share" not in text
    assert "modelserver_profile_quality" not in text


@pytest.mark.parametrize(
    ("model", "profile", "reason"),
    [
        (
            "xgb-classifier-bad-features.ubj",
            "xgb-classifier",
            "it describes 30 features, the model takes 20",
        ),
        (
            "xgb-regressor.ubj",
            "xgb-classifier",
            "it describes a binary model, this one is regression",
        ),
        ("xgb-classifier-weak.ubj", "xgb-classifier", "it was built from model sha256"),
    ],
)
def test_a_profile_of_another_model_stops_the_start_with_the_reason(
    models_dir: Path, tmp_path: Path, model: str, profile: str, reason: str
):
    args = ["--model-uri", str(models_dir / model), *profile_args(models_dir, profile)]
    code, stderr = run_to_exit(args, tmp_path)
    assert code == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("modelserver: the profile does not fit the model:")
    assert reason in last
    assert "modelserver profile --model MODEL --data DATA" in last


def test_a_profile_must_match_its_pin_and_an_http_one_needs_one(models_dir: Path, tmp_path: Path):
    model = ["--model-uri", str(models_dir / "xgb-classifier.ubj")]
    profile = models_dir / "xgb-classifier.profile.json"
    code, stderr = run_to_exit(
        [*model, "--profile-uri", str(profile), "--profile-sha256", "0" * 64], tmp_path
    )
    assert code == 1
    assert f"sha256 mismatch for {profile}: expected {'0' * 64}" in stderr
    code, stderr = run_to_exit([*model, "--profile-uri", "https://h.example/p.json"], tmp_path)
    assert code == 1
    assert "an http(s) profile URI needs MODELSERVER_PROFILE_SHA256" in stderr


def test_a_file_that_is_no_profile_stops_the_start(models_dir: Path, tmp_path: Path):
    broken = tmp_path / "profile.json"
    broken.write_text(json.dumps({"schema_version": 1}))
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj"), "--profile-uri", str(broken)]
    code, stderr = run_to_exit(args, tmp_path)
    assert code == 1
    assert f"profile {broken} is not a valid modelserver profile: model: Field required" in stderr
