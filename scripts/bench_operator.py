"""`make bench-operator`: 300 ModelDeployments against a local cluster, measured.

Reports the time until all are Available, p50/p99 from each create to its stable
Deployment appearing and to all its children (the Deployment and two Services) existing,
the operator's peak RSS, and its CPU use while idle for 60 s afterwards. Everything is
observed through watches, so measuring adds no polling load to the API server.
Then, as the peer, the same burst runs on a fresh cluster with the operator replaced by
a bare client (scripts/direct_children.py) that writes each object's children the moment
it appears, with nothing else, and every latency is reported beside it as a ratio.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families
from tests.support.processes import end_gracefully_on_signals, free_port, run_in_group, shielded

from scripts.direct_children import DirectCreator

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_NAME = "modeldeploy-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The client Service and the stable track's; the canary's comes with the first canary.
SERVICE_SUFFIXES = ("", "-stable")
# Between runs, so that one cluster's teardown (its disk writes above all) does not slow
# the next one down.
SETTLE_SECONDS = 20


def put_kubectl_on_path() -> None:
    """The pinned kubectl from the binaries cache (built on first use) goes first on PATH."""
    built = subprocess.run(
        [ROOT / "scripts" / "build-binaries.sh"], stdout=subprocess.PIPE, text=True, check=True
    )
    paths = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    kubectl_dir = str(Path(paths["KUBECTL_BIN"]).parent)
    os.environ["PATH"] = f"{kubectl_dir}{os.pathsep}{os.environ['PATH']}"


@contextmanager
def local_cluster(name: str = CLUSTER_NAME, real_node: str = "0") -> Iterator[str]:
    """MODELDEPLOY_KUBECONFIG's cluster as is, or a local cluster that is taken down however
    the program ends: even a signal during `cluster.sh up` stops kwokctl with it.
    `real_node` is its MODELDEPLOY_REAL_NODE: off by default, as the real node is one per
    host and the benchmarks' fake pods do not need it."""
    put_kubectl_on_path()
    external = os.environ.get("MODELDEPLOY_KUBECONFIG")
    if external:
        yield external
        return
    script = str(ROOT / "scripts" / "cluster.sh")
    # local processes even where kind works: the benchmarks' fake pods and the demo's
    # process harness need kwok's nodes, the demo's real pods the real node
    env = {
        **os.environ,
        "MODELDEPLOY_CLUSTER_NAME": name,
        "MODELDEPLOY_CLUSTER_RUNTIME": "binary",
        "MODELDEPLOY_REAL_NODE": real_node,
    }
    try:
        up = run_in_group([script, "up"], env=env, stdout=subprocess.PIPE, text=True)
        if up.returncode != 0:
            raise SystemExit(f"{name}: the local cluster did not start (see the messages above)")
        yield up.stdout.strip().splitlines()[-1]
    finally:
        with shielded():  # a second signal must not cut the teardown short
            subprocess.run([script, "down"], env=env, check=False)


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
    except Exception as error:  # the cluster going away ends the watch
        if not stop.is_set():
            print(f"watch of {namespace} ended: {error!r}", file=sys.stderr)
    finally:
        stream.stop()


def is_ready(deployment: client.V1Deployment) -> bool:
    ready = (deployment.status.ready_replicas if deployment.status else None) or 0
    return ready > 0 and ready >= (deployment.spec.replicas or 0)


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


@dataclass
class Burst:
    """When each object was created, and when its children and Available were first seen."""

    created: dict[str, float] = field(default_factory=dict)
    deployments: dict[str, float] = field(default_factory=dict)
    services: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)

    def all_ready(self) -> float:
        """From the first create until every stable Deployment had all its pods ready."""
        return max(self.ready.values()) - min(self.created.values())

    def to_deployment(self) -> list[float]:
        return [self.deployments[f"{n}-stable"] - t for n, t in self.created.items()]

    def to_children(self) -> list[float]:
        return [
            max(
                self.deployments[f"{n}-stable"],
                *(self.services[f"{n}{s}"] for s in SERVICE_SUFFIXES),
            )
            - t
            for n, t in self.created.items()
        ]

    def children_complete(self) -> bool:
        return all(
            f"{n}-stable" in self.deployments
            and all(f"{n}{s}" in self.services for s in SERVICE_SUFFIXES)
            for n in self.created
        )


def new_namespace(api_client: client.ApiClient, kubeconfig: str, stack: ExitStack) -> str:
    subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", ROOT / "crds"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    namespace = f"bench-{int(time.time())}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    stack.callback(core.delete_namespace, namespace)
    return namespace


def burst(api_client: client.ApiClient, namespace: str, count: int, timeout: float,
          until_available: bool, rate: float | None = None) -> Burst:  # fmt: skip
    """Create `count` ModelDeployments one after another, as fast as the API server takes
    them or at `rate` per second, and wait for all their children and ready pods (and,
    if asked, for all to be Available): every run ends with the cluster equally settled."""
    custom = client.CustomObjectsApi(api_client)
    result = Burst()
    stop = threading.Event()
    watches = [
        (client.AppsV1Api(api_client).list_namespaced_deployment, result.deployments, None),
        (client.AppsV1Api(api_client).list_namespaced_deployment, result.ready, is_ready),
        (client.CoreV1Api(api_client).list_namespaced_service, result.services, None),
        (
            functools.partial(
                custom.list_namespaced_custom_object,
                "modeldeploy.dev", "v1alpha1", plural="modeldeployments",
            ),
            result.available,
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
    started = time.monotonic()
    for i in range(count):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        name = f"bench-{i:04d}"
        custom.create_namespaced_custom_object(
            "modeldeploy.dev", "v1alpha1", namespace, "modeldeployments", manifest(name)
        )
        result.created[name] = time.monotonic()
    print(f"created {count} ModelDeployments in {time.monotonic() - started:.1f}s")
    while (
        not result.children_complete()
        or len(result.ready) < count
        or (until_available and len(result.available) < count)
    ):
        if time.monotonic() - started > timeout:
            stop.set()
            sys.exit(
                f"after {timeout:.0f}s: {len(result.deployments)} Deployments, "
                f"{len(result.ready)} ready, {len(result.available)}/{count} Available"
            )
        time.sleep(0.5)
    stop.set()
    return result


@dataclass
class OperatorRun:
    burst: Burst
    all_available: float
    idle_cpu: float | None
    rss_mb: float
    work: str


def run_operator(args: argparse.Namespace, measure_idle: bool) -> OperatorRun:
    with ExitStack() as stack:
        kubeconfig = stack.enter_context(local_cluster())
        api_client = config.new_client_from_config(config_file=kubeconfig)
        namespace = new_namespace(api_client, kubeconfig, stack)
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{namespace}-operator.log"
        metrics_port = free_port()
        pid = stack.enter_context(operator_process(kubeconfig, namespace, log, metrics_port))
        time.sleep(5)
        ours = burst(
            api_client, namespace, args.count, args.timeout, until_available=True, rate=args.rate
        )
        all_available = max(ours.available.values()) - min(ours.created.values())
        idle_cpu = None
        if measure_idle:
            time.sleep(5)  # let the last watch events settle before measuring idle
            cpu_before, idle_start = cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle_seconds)
            idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - idle_start)
        work = f"{reconcile_stats(metrics_port)}\n  (operator log: {log})"
        return OperatorRun(ours, all_available, idle_cpu, peak_rss_mb(pid), work)


def run_peer(args: argparse.Namespace) -> Burst:
    with ExitStack() as stack:
        kubeconfig = stack.enter_context(local_cluster(f"{CLUSTER_NAME}-peer"))
        api_client = config.new_client_from_config(config_file=kubeconfig)
        namespace = new_namespace(api_client, kubeconfig, stack)
        creator = stack.enter_context(DirectCreator(api_client, kubeconfig, namespace))
        peer = burst(
            api_client, namespace, args.count, args.timeout, until_available=False, rate=args.rate
        )
        if creator.errors:
            sys.exit(f"the bare client failed: {creator.errors[0]}")
        return peer


def main() -> None:
    end_gracefully_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="ModelDeployments created per second (default: back to back, as fast as the "
        "API server accepts them)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="pairs of runs, in alternating order (bare client first, then the operator "
        "first, ...) so that a machine getting busier or quieter favours neither side; "
        "0 runs the operator alone",
    )
    args = parser.parse_args()

    ours: list[OperatorRun] = []
    peers: list[Burst] = []
    for round_number in range(max(args.rounds, 1)):
        order = ["peer", "ours"] if round_number % 2 == 0 else ["ours", "peer"]
        for side in order if args.rounds else ["ours"]:
            print(
                f"round {round_number + 1}: {'the operator' if side == 'ours' else 'bare client'}"
            )
            if ours or peers:
                time.sleep(SETTLE_SECONDS)
            if side == "ours":
                ours.append(run_operator(args, measure_idle=not ours))
            else:
                peers.append(run_peer(args))

    def median_of(runs: list[Burst], measured: Callable[[Burst], list[float]], fraction: float
                  ) -> float:  # fmt: skip
        return statistics.median(percentile(measured(run), fraction) for run in runs)

    print()
    pace = f"at {args.rate:g}/s" if args.rate else "back to back"
    print(f"{args.count} ModelDeployments created {pace}; medians over "
          f"{len(ours)} operator and {len(peers)} bare-client runs")  # fmt: skip
    print("| measure | modeldeploy | bare client | ratio | target |")
    print("|---|---|---|---|---|")
    bursts = [run.burst for run in ours]
    for label, measured in (
        ("apply to stable Deployment", Burst.to_deployment),
        ("apply to all children (Deployment + 2 Services)", Burst.to_children),
    ):
        for quantile, fraction in (("p50", 0.5), ("p99", 0.99)):
            value = median_of(bursts, measured, fraction)
            target = "< 2 s" if quantile == "p99" and "children" in label else ""
            if not peers:
                print(f"| {label}, {quantile} | {value:.2f} s | | | {target} |")
                continue
            base = median_of(peers, measured, fraction)
            print(f"| {label}, {quantile} | {value:.2f} s | {base:.2f} s "
                  f"| {value / base:.2f}x | {target} |")  # fmt: skip
    ready = statistics.median(run.burst.all_ready() for run in ours)
    if peers:
        peer_ready = statistics.median(peer.all_ready() for peer in peers)
        print(f"| time until every pod is ready | {ready:.1f} s | {peer_ready:.1f} s "
              f"| {ready / peer_ready:.2f}x | |")  # fmt: skip
    available = statistics.median(run.all_available for run in ours)
    print(f"| time until all Available | {available:.1f} s | | | |")
    print(f"| operator peak RSS | {max(run.rss_mb for run in ours):.0f} MB | | | < 200 MB |")
    idle = ours[0].idle_cpu or 0.0
    print(f"| operator CPU idle ({args.idle_seconds:.0f} s) | {100 * idle:.2f} % of a core "
          "| | | < 3 % |")  # fmt: skip
    for number, run in enumerate(ours, 1):
        each = " / ".join(
            f"{percentile(measured(run.burst), 0.99):.1f}"
            for measured in (Burst.to_deployment, Burst.to_children)
        )
        print(f"operator run {number}: p99 to Deployment / to all children {each} s")
        print(f"  work:\n{run.work}")
    for number, peer in enumerate(peers, 1):
        each = " / ".join(
            f"{percentile(measured(peer), 0.99):.1f}"
            for measured in (Burst.to_deployment, Burst.to_children)
        )
        print(f"bare-client run {number}: p99 to Deployment / to all children {each} s")


if __name__ == "__main__":
    main()
