"""Every endpoint of the in-process app, answered as a V2/V1 client expects."""

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io
import xgboost
from fastapi.testclient import TestClient

from tests.server.conftest import Serve
from tests.server.data import breast_cancer_rows, diabetes_rows, iris_rows
from tests.server.helpers import v2_body

INFER = "/v2/models/xgb-classifier/infer"


def booster(models_dir: Path, name: str) -> xgboost.Booster:
    model = xgboost.Booster()
    model.load_model(models_dir / name)
    return model


def test_health_endpoints_report_live_and_ready(classifier: TestClient):
    assert classifier.get("/v2/health/live").json() == {"live": True}
    assert classifier.get("/v2/health/ready").json() == {"ready": True}
    assert classifier.get("/v2/models/xgb-classifier/ready").json() == {
        "name": "xgb-classifier",
        "ready": True,
    }
    assert classifier.get("/v2/models/xgb-classifier/versions/1/ready").status_code == 200


def test_server_metadata_names_the_server_and_its_extensions(classifier: TestClient):
    body = classifier.get("/v2").json()
    assert body["name"] == "modelserver"
    assert body["version"]
    assert body["extensions"] == ["binary_tensor_data"]


def test_v1_lists_the_model_and_tells_its_status(classifier: TestClient):
    assert classifier.get("/v1/models").json() == {"models": ["xgb-classifier"]}
    response = classifier.get("/v1/models/xgb-classifier")
    assert response.status_code == 200
    assert response.json() == {"name": "xgb-classifier", "ready": True}
    explain = classifier.post("/v1/models/xgb-classifier:explain", json={"instances": [[1]]})
    assert explain.status_code == 404
    assert explain.json() == {"error": "V1 explain is not supported by this server; use :predict"}
    unknown = classifier.get("/v1/models/fraud")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": "model 'fraud' not found; this server serves 'xgb-classifier'"
    }


def test_model_metadata_describes_inputs_outputs_and_task(classifier: TestClient):
    for path in ("/v2/models/xgb-classifier", "/v2/models/xgb-classifier/versions/1"):
        body = classifier.get(path).json()
        assert body["name"] == "xgb-classifier"
        assert body["versions"] == ["1"]
        assert body["platform"] == "xgboost"
        assert body["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 30]}]
        assert body["outputs"] == [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 2]},
        ]
        assert body["parameters"]["task"] == "binary"
        assert len(body["parameters"]["sha256"]) == 64


def test_classifier_infer_returns_classes_and_probabilities_of_xgboost(
    classifier: TestClient, models_dir: Path
):
    rows = breast_cancer_rows(5)
    response = classifier.post(INFER, json=v2_body(rows.tolist(), id="req-7"))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_name"] == "xgb-classifier"
    assert body["model_version"] == "1"
    outputs = {output["name"]: output for output in body["outputs"]}
    positive = booster(models_dir, "xgb-classifier.ubj").inplace_predict(rows.astype(np.float32))
    assert outputs["predict"]["shape"] == [5]
    assert outputs["predict"]["datatype"] == "INT64"
    assert outputs["predict"]["data"] == (positive > 0.5).astype(int).tolist()
    assert outputs["predict_proba"]["shape"] == [5, 2]
    probabilities = np.asarray(outputs["predict_proba"]["data"]).reshape(5, 2)
    np.testing.assert_allclose(probabilities[:, 1], positive, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_flattened_and_nested_data_give_the_same_answer(classifier: TestClient):
    rows = breast_cancer_rows(3).tolist()
    nested = classifier.post(INFER, json=v2_body(rows)).json()
    flat = v2_body(rows)
    flat["inputs"][0]["data"] = [value for row in rows for value in row]
    assert classifier.post(INFER, json=flat).json() == nested


@pytest.mark.parametrize(
    "datatype", ["FP16", "FP32", "FP64", "INT16", "INT32", "INT64", "UINT16", "UINT32", "UINT64"]
)
def test_numeric_datatypes_are_accepted(classifier: TestClient, datatype: str):
    rows = np.rint(breast_cancer_rows(2))  # every value fits 16 bits
    values = rows.tolist() if datatype.startswith("FP") else rows.astype(int).tolist()
    response = classifier.post(INFER, json=v2_body(values, datatype))
    assert response.status_code == 200, response.text


def test_bool_input_is_accepted_as_zeros_and_ones(classifier: TestClient):
    response = classifier.post(INFER, json=v2_body([[True, False] * 15], "BOOL"))
    assert response.status_code == 200, response.text


def test_outputs_selection_returns_only_the_requested_output(classifier: TestClient):
    body = v2_body(breast_cancer_rows(2).tolist(), outputs=[{"name": "predict_proba"}])
    outputs = classifier.post(INFER, json=body).json()["outputs"]
    assert [output["name"] for output in outputs] == ["predict_proba"]


def test_outputs_say_their_content_type(classifier: TestClient):
    outputs = classifier.post(INFER, json=v2_body(breast_cancer_rows(1).tolist())).json()["outputs"]
    assert [output["parameters"] for output in outputs] == [{"content_type": "np"}] * 2


def test_content_type_str_returns_an_output_as_strings(classifier: TestClient):
    asked = [{"name": "predict", "parameters": {"content_type": "str"}}]
    body = v2_body(breast_cancer_rows(2).tolist(), outputs=asked)
    (output,) = classifier.post(INFER, json=body).json()["outputs"]
    assert output == {
        "name": "predict",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"content_type": "str"},
        "data": ["0", "0"],
    }


def test_content_type_np_is_taken_and_others_are_refused(classifier: TestClient):
    rows = breast_cancer_rows(1).tolist()
    numpy_input = v2_body(rows)
    numpy_input["inputs"][0]["parameters"] = {"content_type": "np"}
    assert classifier.post(
        INFER, json={**numpy_input, "parameters": {"content_type": "np"}}
    ).is_success
    refusals = {
        "input 'input-0': content_type 'pd' is not supported": {
            **v2_body(rows),
            "inputs": [{**numpy_input["inputs"][0], "parameters": {"content_type": "pd"}}],
        },
        "request: content_type 'str' is not supported": {
            **v2_body(rows),
            "parameters": {"content_type": "str"},
        },
        "output 'predict': content_type 'base64' is not supported for outputs": v2_body(
            rows, outputs=[{"name": "predict", "parameters": {"content_type": "base64"}}]
        ),
    }
    for message, body in refusals.items():
        response = classifier.post(INFER, json=body)
        assert response.status_code == 422
        assert response.json()["error"].startswith(message)


def test_json_request_can_ask_for_binary_outputs(classifier: TestClient):
    body = v2_body(breast_cancer_rows(1).tolist(), parameters={"binary_data_output": True})
    response = classifier.post(INFER, json=body)
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert sizes == [8, 8]
    assert len(response.content) == length + 16


def test_versioned_infer_path_serves_the_configured_version(classifier: TestClient):
    path = "/v2/models/xgb-classifier/versions/1/infer"
    response = classifier.post(path, json=v2_body(breast_cancer_rows(1).tolist()))
    assert response.status_code == 200


def test_missing_values_go_to_xgboost_as_nan(classifier: TestClient, models_dir: Path):
    rows = breast_cancer_rows(2)
    rows[0, 3] = np.nan
    body = v2_body([[None if np.isnan(v) else v for v in row] for row in rows.tolist()])
    body_text = str(body).replace("None", "NaN").replace("'", '"')  # what Python clients send
    response = classifier.post(INFER, content=body_text)
    assert response.status_code == 200, response.text
    expected = booster(models_dir, "xgb-classifier.ubj").inplace_predict(rows.astype(np.float32))
    probabilities = np.asarray(response.json()["outputs"][1]["data"]).reshape(2, 2)
    np.testing.assert_allclose(probabilities[:, 1], expected, rtol=1e-6)


def test_regressor_predicts_values_of_xgboost(serve: Serve, models_dir: Path):
    rows = diabetes_rows(4)
    with serve("xgb-regressor.ubj") as client:
        metadata = client.get("/v2/models/xgb-regressor").json()
        body = client.post("/v2/models/xgb-regressor/infer", json=v2_body(rows.tolist())).json()
    assert metadata["parameters"]["task"] == "regression"
    assert [output["name"] for output in metadata["outputs"]] == ["predict"]
    expected = booster(models_dir, "xgb-regressor.ubj").inplace_predict(rows.astype(np.float32))
    assert body["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_allclose(body["outputs"][0]["data"], expected, rtol=1e-6)


def test_skops_pipeline_predicts_like_scikit_learn(serve: Serve, models_dir: Path):
    path = models_dir / "sklearn-pipeline.skops"
    pipeline = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    rows = iris_rows(150)[::30]
    with serve("sklearn-pipeline.skops") as client:
        metadata = client.get("/v2/models/sklearn-pipeline").json()
        response = client.post("/v2/models/sklearn-pipeline/infer", json=v2_body(rows.tolist()))
    assert metadata["platform"] == "sklearn"
    assert metadata["parameters"]["task"] == "multiclass"
    assert metadata["parameters"]["classes"] == [0, 1, 2]
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["predict"]["data"] == pipeline.predict(rows).tolist()
    np.testing.assert_allclose(
        np.asarray(outputs["predict_proba"]["data"]).reshape(len(rows), 3),
        pipeline.predict_proba(rows),
    )


def test_v1_predict_returns_predictions_and_probabilities(classifier: TestClient, models_dir: Path):
    rows = breast_cancer_rows(3)
    response = classifier.post(
        "/v1/models/xgb-classifier:predict", json={"instances": rows.tolist()}
    )
    assert response.status_code == 200
    body = response.json()
    positive = booster(models_dir, "xgb-classifier.ubj").inplace_predict(rows.astype(np.float32))
    assert body["predictions"] == (positive > 0.5).astype(int).tolist()
    np.testing.assert_allclose(np.asarray(body["probabilities"])[:, 1], positive, rtol=1e-6)


def test_openapi_documents_the_infer_request_schema(classifier: TestClient):
    document = classifier.get("/openapi.json").json()
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    reference = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema_name = reference.rsplit("/", 1)[1]
    assert "inputs" in document["components"]["schemas"][schema_name]["properties"]
    assert "RequestInput" in document["components"]["schemas"]
    assert classifier.get("/docs").status_code == 200


def test_metrics_endpoint_serves_prometheus_text(classifier: TestClient):
    response = classifier.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "modelserver_model_info{" in response.text
