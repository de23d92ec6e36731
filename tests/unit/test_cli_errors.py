"""`kubectl modeldeploy` finds its cluster as kubectl does and says clearly what went
wrong: run in-process against a real HTTP server on 127.0.0.1 standing in for the API
server, answering as kube-apiserver answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.cli.main import main
from tests.support import LocalServer, Reply, Request
from tests.support.processes import free_port
from tests.unit.cli_objects import md, write_kubeconfig

MD_PATH = "/apis/modeldeploy.dev/v1alpha1/namespaces/{ns}/modeldeployments/fraud"


def status(code: int, reason: str, message: str, name: str | None = None) -> Reply:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        body["details"] = {"name": name, "group": "modeldeploy.dev", "kind": "modeldeployments"}
    return Reply(code, json.dumps(body))


class FakeApiServer:
    """Answers every request with `reply` and records the requests."""

    def __init__(self) -> None:
        self.reply = Reply(200, json.dumps(md()))
        self.requests: list[Request] = []
        self.server = LocalServer(self._answer)
        self.url = self.server.url

    def _answer(self, request: Request) -> Reply:
        self.requests.append(request)
        return self.reply


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    with fake.server:
        yield fake


@pytest.fixture
def kubeconfig(api, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_kubeconfig(tmp_path / "config", {"main": api.url}, "main")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_namespace_comes_from_the_context_and_the_token_is_sent(api, kubeconfig, capsys):
    code, out, _ = run(capsys, "history", "fraud")
    assert code == 0
    assert "first deployment" not in out  # the object has no history
    assert "has no history yet" in out
    assert api.requests[0].path == MD_PATH.format(ns="ns-main")
    assert api.requests[0].headers["authorization"] == "Bearer t0ken"


def test_dash_n_overrides_the_contexts_namespace_before_or_after_the_verb(api, kubeconfig, capsys):
    run(capsys, "-n", "team-a", "history", "fraud")
    run(capsys, "history", "fraud", "--namespace", "team-b")
    assert [r.path for r in api.requests] == [
        MD_PATH.format(ns="team-a"),
        MD_PATH.format(ns="team-b"),
    ]


def test_context_and_kubeconfig_flags_pick_another_cluster(api, kubeconfig, tmp_path, capsys):
    with LocalServer(lambda request: Reply(200, json.dumps(md()))) as other:
        merged = write_kubeconfig(tmp_path / "two", {"main": api.url, "other": other.url}, "main")
        code, _, err = run(
            capsys, "--kubeconfig", str(merged), "--context", "other", "history", "fraud"
        )
    assert code == 0, err
    assert api.requests == []


def test_several_files_in_kubeconfig_are_merged(api, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    first = write_kubeconfig(tmp_path / "a", {"main": api.url}, "main")
    second = write_kubeconfig(tmp_path / "b", {"second": api.url}, "main")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{first}:{second}")
    code, _, err = run(capsys, "--context", "second", "history", "fraud")
    assert code == 0, err
    assert api.requests[0].path == MD_PATH.format(ns="ns-second")


def test_an_object_that_is_not_there_is_named_with_its_namespace(api, kubeconfig, capsys):
    api.reply = status(
        404, "NotFound", 'modeldeployments.modeldeploy.dev "fraud" not found', "fraud"
    )
    code, out, err = run(capsys, "get", "fraud")
    assert code == 3
    assert out == ""
    assert 'error: modeldeployment "fraud" not found in namespace ns-main (context main,' in err
    assert "-n NAMESPACE" in err


def test_a_cluster_without_the_crd_is_told_how_to_install_it(api, kubeconfig, capsys):
    # What kube-apiserver answers for a resource type it does not serve.
    api.reply = Reply(404, "404 page not found\n", "text/plain; charset=utf-8")
    code, _, err = run(capsys, "promote", "fraud")
    assert code == 3
    assert "the ModelDeployment CRD is not installed" in err
    assert "kubectl apply --server-side -f crds/" in err


def test_refused_credentials_say_which_context(api, kubeconfig, capsys):
    api.reply = status(401, "Unauthorized", "Unauthorized")
    code, _, err = run(capsys, "status", "fraud")
    assert code == 3
    assert "refused the credentials of context main (401 Unauthorized)" in err


def test_a_missing_permission_quotes_the_api_server(api, kubeconfig, capsys):
    api.reply = status(
        403,
        "Forbidden",
        'modeldeployments.modeldeploy.dev "fraud" is forbidden: User "dev" cannot get resource',
    )
    code, _, err = run(capsys, "abort", "fraud")
    assert code == 3
    assert "not allowed to get modeldeployment fraud in namespace ns-main" in err
    assert 'User "dev" cannot get resource' in err


def test_other_api_errors_give_code_and_message(api, kubeconfig, capsys):
    api.reply = status(500, "InternalError", "etcdserver: request timed out")
    code, _, err = run(capsys, "get", "fraud")
    assert code == 3
    assert "the API server answered 500" in err
    assert "etcdserver: request timed out" in err


def test_an_unreachable_api_server_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "c", {"gone": url}, "gone")))
    code, _, err = run(capsys, "list")
    assert code == 3
    assert f"cannot reach the API server at {url} (context gone)" in err


def test_no_kubeconfig_at_all_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run(capsys, "get", "fraud")
    assert code == 3
    assert "no Kubernetes credentials" in err
    assert "~/.kube/config (KUBECONFIG is not set)" in err


def test_a_missing_kubeconfig_file_or_context_is_named(api, kubeconfig, tmp_path, capsys):
    code, _, err = run(capsys, "--kubeconfig", str(tmp_path / "nope"), "get", "fraud")
    assert code == 3
    assert f"--kubeconfig {tmp_path / 'nope'}: no such file." in err
    code, _, err = run(capsys, "--context", "prod", "get", "fraud")
    assert code == 3
    assert "context 'prod' is not in the kubeconfig (contexts: main)" in err


def test_usage_errors_exit_3_not_2_which_means_timed_out(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["status", "fraud", "--timeout", "10x"])
    assert exited.value.code == 3
    assert "e.g. 90s, 10m or 1h30m" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate", "fraud"])
    assert exited.value.code == 3


def test_a_refused_verb_changes_nothing_and_exits_1(api, kubeconfig, capsys):
    api.reply = Reply(200, json.dumps(md(phase="Available")))
    code, out, err = run(capsys, "promote", "fraud")
    assert (code, out) == (1, "")
    assert "refused: modeldeployment fraud in ml has no canary to promote" in err
    assert [r.method for r in api.requests] == ["GET"]
