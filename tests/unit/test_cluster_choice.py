"""Which cluster the test tiers start: the kwok tier needs the local-process cluster (kwok's
fake nodes and stages), even on a machine where kind works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.conftest import SCRIPTS, _cluster_env


def _with_working_kind(tmp_path: Path) -> dict[str, str]:
    """PATH with a `kind` and a `docker` that answer, as on a machine with Docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kind", "docker"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_the_test_clusters_are_local_processes_even_where_kind_works(tmp_path: Path) -> None:
    env = {
        **_cluster_env("mdtest-choice"),
        **_with_working_kind(tmp_path),
        "MODELDEPLOY_CACHE": str(tmp_path / "cache"),
    }

    done = subprocess.run(
        [str(SCRIPTS / "cluster.sh"), "kubeconfig"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    # no cluster of that name runs: the message names the runtime it would have used
    assert "no local cluster mdtest-choice" in done.stderr, done.stderr
