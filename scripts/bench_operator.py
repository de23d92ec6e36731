"""`make bench-operator`: 300 ModelDeployments against a local cluster, measured.

Reports the time until all are Available, p50/p99 from each create to its stable
Deployment appearing and to all its children (the Deployment and two Services) existing,
the operator's peak RSS, and its CPU use while idle for 60 s afterwards. Everything is
observed through watches, so measuring adds no polling load to the API server.
Uses MODELDEPLOY_KUBECONFIG when set, else starts (and stops)
a local cluster with scripts/cluster.sh. Everything it starts listens on 127.0.0.1 and
is stopped at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_NAME = "modeldeploy-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The client Service and the stable track's; the canary's comes with the first canary.
SERVICE_SUFFIXES = ("", "-stable")


def put_kubectl_on_path() -> None:
    """The pinned kubectl from the binaries cache (built on first use) goes first on PATH."""
    built = subprocess.run(
        [ROOT / "scripts" / "build-binaries.sh"], stdout=subprocess.PIPE, text=True, check=True
    )
    paths = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    kubectl_dir = str(Path(paths["KUBECTL_BIN"]).parent)
    os.environ["PATH"] = f"{kubectl_dir}{os.pathsep}{os.environ['PATH']}"


@contextmanager
def local_cluster(name: str = CLUSTER_NAME) -> Iterator[str]:
    """MODELDEPLOY_KUBECONFIG's cluster as is, or a local cluster started and stopped here."""
    put_kubectl_on_path()
    external = os.environ.get("MODELDEPLOY_KUBECONFIG")
    if external:
        yield external
        return
    env = {**os.environ, "MODELDEPLOY_CLUSTER_NAME": name}
    up = subprocess.run(
        [ROOT / "scripts" / "cluster.sh", "up"], env=env, stdout=subprocess.PIPE, text=True
    )
    if up.returncode != 0:
        sys.exit("bench-operator: the local cluster did not start (see the messages above)")
    try:
        yield up.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([ROOT / "scripts" / "cluster.sh", "down"], env=env, check=False)


@contextmanager
def operator_process(kubeconfig: str, namespace: str, log: Path, metrics_port: int
                     ) -> Iterator[int]:  # fmt: skip
    command = [
        sys.executable, "-m", "modeldeploy", "--kubeconfig", kubeconfig,
        "--namespace", namespace, "--lease-namespace", namespace,
        "--metrics-port", str(metrics_port), "--health-port", str(free_port()),
        "--bind-address", "127.0.0.1", "--log-format", "plain",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "bench",
                "version": "1.0.0",
                "uri": "https://models.example.com/bench/1.0.0/model.ubj",
                "sha256": "ab" * 32,
            }
        },
    }


def first_seen(list_call: Any, namespace: str, seen: dict[str, float], stop: threading.Event,
               accept: Any = lambda obj: True) -> None:  # fmt: skip
    """Record when each object first appears (and passes `accept`), until stopped."""
    stream = watch.Watch()
    try:
        for event in stream.stream(list_call, namespace, timeout_seconds=900):
            obj = event["object"]
            name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
            if accept(obj):
                seen.setdefault(name, time.monotonic())
            if stop.is_set():
                break
    except Exception as error:
        if not stop.is_set():
            print(f"watch of {namespace} ended: {error!r}", file=sys.stderr)
    finally:
        stream.stop()


def is_available(md: dict[str, Any]) -> bool:
    conditions = (md.get("status") or {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def reconcile_stats(metrics_port: int) -> str:
    """Reconciles and API calls the operator made, with mean durations, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    wanted = ("modeldeploy_reconcile_duration_seconds", "modeldeploy_kube_request_duration_seconds")
    sums: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_count", "_sum")):
                slot = 0 if sample.name.endswith("_count") else 1
                sums.setdefault(tuple(sorted(sample.labels.items())), [0.0, 0.0])[slot] += (
                    sample.value
                )
    lines = []
    for labels, (count, total) in sorted(sums.items()):
        described = ",".join(f"{k}={v}" for k, v in labels) or "reconciles"
        lines.append(f"  {described}: {count:.0f}, mean {1000 * total / max(count, 1):.1f} ms")
    return "\n".join(lines)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    with ExitStack() as stack:
        kubeconfig = stack.enter_context(local_cluster())
        api_client = config.new_client_from_config(config_file=kubeconfig)
        subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", ROOT / "crds"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        namespace = f"bench-{int(time.time())}"
        core = client.CoreV1Api(api_client)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(core.delete_namespace, namespace)
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{namespace}-operator.log"
        metrics_port = free_port()
        pid = stack.enter_context(operator_process(kubeconfig, namespace, log, metrics_port))
        time.sleep(5)

        custom = client.CustomObjectsApi(api_client)
        deployments: dict[str, float] = {}
        services: dict[str, float] = {}
        available: dict[str, float] = {}
        stop = threading.Event()
        watches = [
            (client.AppsV1Api(api_client).list_namespaced_deployment, deployments, None),
            (core.list_namespaced_service, services, None),
            (
                functools.partial(
                    custom.list_namespaced_custom_object,
                    "modeldeploy.dev", "v1alpha1", plural="modeldeployments",
                ),
                available,
                is_available,
            ),
        ]  # fmt: skip
        for list_call, seen, accept in watches:
            threading.Thread(
                target=first_seen,
                args=(list_call, namespace, seen, stop, accept or (lambda obj: True)),
                daemon=True,
            ).start()
        time.sleep(1)  # the watches are open before the first create
        created: dict[str, float] = {}
        started = time.monotonic()
        for i in range(args.count):
            name = f"bench-{i:04d}"
            custom.create_namespaced_custom_object(
                "modeldeploy.dev", "v1alpha1", namespace, "modeldeployments", manifest(name)
            )
            created[name] = time.monotonic()
        print(f"created {args.count} ModelDeployments in {time.monotonic() - started:.1f}s")

        while len(available) < args.count:
            if time.monotonic() - started > args.timeout:
                sys.exit(f"only {len(available)}/{args.count} Available after {args.timeout:.0f}s")
            time.sleep(0.5)
        all_available = max(available.values()) - started
        stop.set()
        to_deployment = [deployments[f"{n}-stable"] - t for n, t in created.items()]
        to_children = [
            max(deployments[f"{n}-stable"], *(services[f"{n}{s}"] for s in SERVICE_SUFFIXES)) - t
            for n, t in created.items()
        ]

        time.sleep(5)  # let the last watch events settle before measuring idle
        cpu_before, idle_start = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - idle_start)
        rss = peak_rss_mb(pid)
        reconciles = reconcile_stats(metrics_port)

    print()
    print(f"| measure ({args.count} ModelDeployments) | value | target |")
    print("|---|---|---|")
    print(f"| time until all Available | {all_available:.1f} s | |")
    for label, latencies, target in (
        ("apply to stable Deployment", to_deployment, ""),
        ("apply to all children (Deployment + 2 Services)", to_children, "< 2 s"),
    ):
        print(f"| {label}, p50 | {statistics.median(latencies):.3f} s | |")
        print(f"| {label}, p99 | {percentile(latencies, 0.99):.3f} s | {target} |")
    print(f"| operator peak RSS | {rss:.0f} MB | < 200 MB |")
    print(f"| operator CPU idle ({args.idle_seconds:.0f} s) | {100 * idle_cpu:.2f} % of a core "
          "| < 3 % |")  # fmt: skip
    print(f"operator work:\n{reconciles}")
    print(f"(operator log: {log})")


if __name__ == "__main__":
    main()
