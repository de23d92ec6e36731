"""kopf logs in with the operator's own credentials: a kubeconfig's token, or a pod's
service account token (in-cluster), never anonymously."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import kopf
import pytest
import yaml
from kubernetes.config import incluster_config

from modeldeploy import handlers

# kopf types its decorated handlers as its own callbacks; called here like kopf calls it
login = cast(Callable[..., kopf.ConnectionInfo], handlers.login)


def _memo(kubeconfig: str | None) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(kubeconfig=kubeconfig))


def test_a_kubeconfig_token_is_sent(tmp_path: Path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    info = login(memo=_memo(str(kubeconfig)))
    assert (info.scheme, info.token) == ("Bearer", "kubeconfig-token")


def test_in_a_pod_the_service_account_token_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    token = tmp_path / "token"
    token.write_text("service-account-token")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = login(memo=_memo(None))
    assert info.server == "https://10.96.0.1:443"
    assert (info.scheme, info.token) == ("Bearer", "service-account-token")
