"""The images `make images` builds, run for real (marker ``images``).

Each image is taken from the OCI archive the local cluster imports (listed in
``images/manifest.tsv`` under the cache), unpacked with umoci and started with runc as its
own non-root user on a read-only root filesystem, as a kubelet runs it: the server serves a
sample model mounted in and answers on 127.0.0.1; the operator prints its help and, with no
cluster to talk to, exits with an error that says so.

Without the archives (``make images``), root, umoci or runc, the tests are skipped with the
reason, or fail with ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import free_port, shielded

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
MANIFEST = CACHE / "images" / "manifest.tsv"
PRODUCT_IMAGES = ("modeldeploy-operator", "modelserver")
SERVER_USER = 65532  # what the operator's pods run as (runAsUser in resources.py)
OPERATOR_USER = 10001  # what the chart's pod security context sets
MODEL_MOUNT = "/mnt/models"  # where the operator mounts pvc:// models
GPU_LIBRARY = re.compile(r"cuda|nvidia|nccl|cudnn|cublas|cufft|curand|cusolver|cusparse", re.I)


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "no version in pyproject.toml"
    return match.group(1)


def _unavailable(reason: str) -> None:
    """Fail loudly in CI, skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the images cannot be checked (CI=true): {reason}", pytrace=False)
    pytest.skip(f"the images cannot be checked: {reason}")


@dataclass(frozen=True)
class Archive:
    name: str
    tag: str
    path: Path


@pytest.fixture(scope="module")
def archives() -> dict[str, Archive]:
    if sys.platform != "linux" or os.geteuid() != 0:
        _unavailable("running images with runc needs root on Linux")
    missing = [tool for tool in ("umoci", "runc") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (make images installs them)")
    if not MANIFEST.is_file():
        _unavailable(f"no {MANIFEST}: build the images with `make images`")
    listed = {}
    for line in MANIFEST.read_text().splitlines():
        name, tag, path, *_ = line.split("\t")
        listed[name] = Archive(name, tag, Path(path))
    version = _project_version()
    for name in PRODUCT_IMAGES:
        archive = listed.get(name)
        if archive is None or archive.tag != version or not archive.path.is_file():
            _unavailable(f"no {name}:{version} archive in {MANIFEST}: run `make images`")
    # The manifest also lists the node tier's own images (Prometheus, loadgen, ...), which
    # carry their upstream versions and are not what users install.
    return {name: listed[name] for name in PRODUCT_IMAGES}


@dataclass
class Image:
    """An image unpacked for runc: its root filesystem, image config and runtime config."""

    rootfs: Path
    config: dict[str, Any]
    """The OCI image configuration (User, Labels, Entrypoint, ...)."""
    runtime: dict[str, Any]
    """The runtime configuration umoci derives from it (config.json for runc)."""
    references: list[str]
    """The reference names inside the archive."""


def _unpack(archive: Archive, workdir: Path) -> Image:
    layout, rootfs = workdir / "layout", workdir / "rootfs"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive.path), "-C", str(layout)], check=True)
    image = f"{layout}:{archive.tag}"
    subprocess.run(["umoci", "raw", "unpack", "--image", image, str(rootfs)], check=True)
    runtime_config = workdir / "config.json"
    subprocess.run(
        [
            "umoci",
            "raw",
            "runtime-config",
            "--image",
            image,
            "--rootfs",
            str(rootfs),
            str(runtime_config),
        ],
        check=True,
    )
    index = json.loads((layout / "index.json").read_text())

    def blob(digest: str) -> dict[str, Any]:
        algorithm, value = digest.split(":")
        loaded: dict[str, Any] = json.loads((layout / "blobs" / algorithm / value).read_text())
        return loaded

    manifest = blob(index["manifests"][0]["digest"])
    return Image(
        rootfs=rootfs,
        config=blob(manifest["config"]["digest"]).get("config", {}),
        runtime=json.loads(runtime_config.read_text()),
        references=[
            entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            for entry in index["manifests"]
        ],
    )


@pytest.fixture(scope="module")
def unpacked(
    archives: dict[str, Archive], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Image]]:
    workdirs = {name: tmp_path_factory.mktemp(name) for name in archives}
    try:
        yield {name: _unpack(archives[name], workdirs[name]) for name in archives}
    finally:
        with shielded():
            for workdir in workdirs.values():
                shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def models() -> Path:
    """The sample models of `make models`, trained into a temporary folder if missing."""
    examples = REPO / "examples" / "models"
    if (examples / "sample-request.json").is_file():
        return examples
    output = Path(os.environ.get("TMPDIR", "/tmp")) / f"modeldeploy-image-models-{os.getpid()}"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_models.py"), "--output", str(output)],
        check=True,
        timeout=600,
    )
    return output


class Container:
    """One runc container of an unpacked image: read-only root, the image's user, no
    capabilities beyond the runtime's defaults, and tmpfs where the pods mount emptyDirs."""

    def __init__(
        self,
        image: Image,
        workdir: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        binds: dict[str, Path] | None = None,
        writable: tuple[str, ...] = ("/tmp",),
        host_network: bool = False,
    ) -> None:
        self.id = f"modeldeploy-image-test-{uuid.uuid4().hex[:8]}"
        self.state = workdir / "runc-state"
        self.bundle = workdir / self.id
        self.bundle.mkdir(parents=True)
        self.output = self.bundle / "output.log"
        config = copy.deepcopy(image.runtime)
        config["root"] = {"path": str(image.rootfs), "readonly": True}
        process = config["process"]
        process["terminal"] = False
        if args is not None:
            process["args"] = args
        process["env"] = process.get("env", []) + [f"{k}={v}" for k, v in (env or {}).items()]
        user = process["user"]
        # As the pods' emptyDirs with fsGroup: writable by the image's user, nothing else is.
        mounts = [m for m in config["mounts"] if m["destination"] not in writable]
        for path in writable:
            mounts.append(
                {
                    "destination": path,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": [
                        "nosuid",
                        "nodev",
                        "mode=0700",
                        f"uid={user['uid']}",
                        f"gid={user['gid']}",
                    ],
                }
            )
        for destination, source in (binds or {}).items():
            mounts.append(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": str(source),
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                }
            )
        config["mounts"] = mounts
        if host_network:
            # The server listens on 127.0.0.1 of this host; nothing else is reachable or used.
            namespaces = config["linux"]["namespaces"]
            config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def start(self) -> None:
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(
                self._runc("run", "--bundle", str(self.bundle), self.id),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def run(self, timeout: float = 120) -> tuple[int, str]:
        """Run to the end: (exit status, output)."""
        self.start()
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.remove()
        return code, self.logs()

    def logs(self) -> str:
        return self.output.read_text(errors="replace")

    def pid(self) -> int:
        state = subprocess.run(
            self._runc("state", self.id), check=True, capture_output=True, text=True
        )
        pid: int = json.loads(state.stdout)["pid"]
        return pid

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, as the kubelet sends; SIGKILL after `timeout` seconds."""
        assert self.process is not None
        subprocess.run(self._runc("kill", self.id, "TERM"), check=False, capture_output=True)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.remove()

    def remove(self) -> None:
        with shielded():
            subprocess.run(
                self._runc("delete", "--force", self.id), check=False, capture_output=True
            )
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def _ids(status: str) -> dict[str, list[int]]:
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {key: [int(v) for v in fields[key].split()] for key in ("Uid", "Gid")}


def _wait_ready(container: Container, url: str, deadline: float) -> None:
    assert container.process is not None
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            code = container.process.returncode
            pytest.fail(f"the server exited with {code}:\n{container.logs()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server was not ready in time:\n{container.logs()}")


def test_archives_carry_the_project_version_as_a_bare_tag(archives, unpacked):
    """ctr import --base-name names an image only when the archive's reference is a tag
    alone; with a full name inside, the import succeeds and imports nothing."""
    version = _project_version()
    for name, image in unpacked.items():
        assert image.references == [version], name
        assert image.config["Labels"]["org.opencontainers.image.version"] == version


def test_images_run_as_non_root(unpacked):
    assert unpacked["modelserver"].config["User"] == f"{SERVER_USER}:{SERVER_USER}"
    assert unpacked["modeldeploy-operator"].config["User"] == f"{OPERATOR_USER}:{OPERATOR_USER}"


def test_server_serves_a_model_on_a_read_only_root_as_its_user(unpacked, models, tmp_path):
    port = free_port()
    server = Container(
        unpacked["modelserver"],
        tmp_path,
        env={
            "MODELSERVER_MODEL_URI": f"{MODEL_MOUNT}/xgb-classifier.ubj",
            "MODELSERVER_HOST": "127.0.0.1",
            "MODELSERVER_PORT": str(port),
            "MODELSERVER_GRPC_PORT": str(free_port()),
        },
        binds={MODEL_MOUNT: models},
        writable=("/tmp", "/var/cache/modelserver"),
        host_network=True,
    )
    base = f"http://127.0.0.1:{port}"
    server.start()
    try:
        _wait_ready(server, f"{base}/v2/health/ready", time.monotonic() + 180)
        request = json.loads((models / "sample-request.json").read_text())
        reply = httpx.post(f"{base}/v2/models/xgb-classifier/infer", json=request, timeout=30)
        assert reply.status_code == 200, reply.text
        outputs = {output["name"]: output for output in reply.json()["outputs"]}
        rows = request["inputs"][0]["shape"][0]
        assert outputs["predict"]["shape"] == [rows]
        ids = _ids(Path(f"/proc/{server.pid()}/status").read_text())
        assert ids == {"Uid": [SERVER_USER] * 4, "Gid": [SERVER_USER] * 4}
    finally:
        code = server.stop()
    assert code == 0, f"the server did not stop cleanly on SIGTERM ({code}):\n{server.logs()}"


def test_server_image_keeps_sleep_for_the_prestop_hook(unpacked, tmp_path):
    code, output = Container(unpacked["modelserver"], tmp_path, args=["sleep", "0"]).run()
    assert code == 0, output


def test_server_image_carries_no_gpu_libraries(unpacked):
    rootfs = unpacked["modelserver"].rootfs
    site = next(rootfs.glob("opt/modelserver/lib/python3.*/site-packages"))
    assert list(site.glob("xgboost_cpu-*.dist-info")), "the CPU-only xgboost wheel is missing"
    gpu = [
        str(path.relative_to(rootfs))
        for path in rootfs.rglob("*")
        if GPU_LIBRARY.search(path.name)
        and (".so" in path.name or path.name.endswith(".dist-info"))
    ]
    assert gpu == []


def test_images_do_not_carry_the_hosts_own_certificates(unpacked):
    """The build trusts the host's CA bundle through a read-only mount; local additions to
    it (a proxy's CA, say) must not end up in an image."""
    local = Path("/usr/local/share/ca-certificates")
    host_only = [_pem_body(p.read_text()) for p in local.rglob("*.crt")] if local.is_dir() else []
    for name, image in unpacked.items():
        bundle = (image.rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()
        carried = {_pem_body(block) for block in bundle.split("-----END CERTIFICATE-----")}
        assert not [cert for cert in host_only if cert in carried], name
        assert not list((image.rootfs / "usr/local/share/ca-certificates").rglob("*.crt")), name


def _pem_body(pem: str) -> str:
    return "".join(
        line.strip() for line in pem.splitlines() if line.strip() and "-----" not in line
    )


def test_operator_prints_its_help(unpacked, tmp_path):
    image = unpacked["modeldeploy-operator"]
    args = [*image.runtime["process"]["args"], "--help"]
    code, output = Container(image, tmp_path, args=args).run()
    assert code == 0, output
    assert "usage: modeldeploy-operator" in output


def test_operator_without_a_cluster_exits_saying_so(unpacked, tmp_path):
    """No in-cluster service account and no kubeconfig: the operator must stop with an error
    about its Kubernetes configuration, not hang or crash on the read-only root."""
    code, output = Container(unpacked["modeldeploy-operator"], tmp_path).run(timeout=120)
    assert code != 0, output
    assert "modeldeploy-operator: no Kubernetes credentials" in output
    assert "give --kubeconfig" in output
    assert "Traceback" not in output, "one clear line, not a stack trace"
    assert "Read-only file system" not in output
