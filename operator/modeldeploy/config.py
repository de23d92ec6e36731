"""Operator configuration: flags of `modeldeploy-operator`, each also an environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from modeldeploy.leader import LeaseTimings
from modeldeploy.outbound import BadUrl, Origin, parse_allow_list

DEFAULT_IMAGE = "ghcr.io/modeldeploy/modelserver:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    kubeconfig: str | None = None
    default_image: str = DEFAULT_IMAGE
    default_prometheus_url: str | None = None
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"
    leader_election: bool = True
    lease_name: str = "modeldeploy-operator"
    lease_namespace: str | None = None
    identity: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "modeldeploy"))
    resync_seconds: float = 300.0
    log_format: str = "json"
    # Where analyses may send queries (and the Secrets that go with them); empty: anywhere.
    allowed_prometheus_urls: tuple[Origin, ...] = ()
    # Off: bearer tokens, CA bundles and webhook URLs are never read from Secrets.
    read_secrets: bool = True
    lease_timings: LeaseTimings = field(default_factory=LeaseTimings)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MODELDEPLOY_{name}", default)


def parse_args(argv: list[str] | None = None) -> OperatorConfig:
    defaults = OperatorConfig()
    parser = argparse.ArgumentParser(
        prog="modeldeploy-operator",
        description="Run the modeldeploy operator. Every flag is also MODELDEPLOY_<FLAG>.",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in (_env("NAMESPACES") or "").split(",") if n],
        help="namespace to watch; repeat for several (default: all namespaces)",
    )
    parser.add_argument("--kubeconfig", default=_env("KUBECONFIG") or os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--default-image",
        default=_env("DEFAULT_IMAGE", defaults.default_image),
        help="server image for ModelDeployments that set no spec.server.image",
    )
    parser.add_argument(
        "--default-prometheus-url",
        default=_env("DEFAULT_PROMETHEUS_URL"),
        help="Prometheus for ModelDeployments that set no spec.analysis.prometheus",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(_env("METRICS_PORT", "8080") or 8080)
    )
    parser.add_argument("--health-port", type=int, default=int(_env("HEALTH_PORT", "8081") or 8081))
    parser.add_argument("--bind-address", default=_env("BIND_ADDRESS", defaults.bind_address))
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        default=_env("LEADER_ELECTION", "true") == "false",
        help="run without a Lease (only when exactly one replica runs)",
    )
    parser.add_argument("--lease-name", default=_env("LEASE_NAME", defaults.lease_name))
    parser.add_argument(
        "--lease-namespace",
        default=_env("LEASE_NAMESPACE") or os.environ.get("POD_NAMESPACE"),
        help="namespace of the leader Lease (default: the first watched namespace or default)",
    )
    parser.add_argument("--identity", default=_env("IDENTITY", defaults.identity))
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(_env("RESYNC_SECONDS", "300") or 300),
        help="re-check every ModelDeployment at least this often, to correct drift",
    )
    parser.add_argument(
        "--log-format", choices=["json", "plain"], default=_env("LOG_FORMAT", "json")
    )
    parser.add_argument(
        "--allowed-prometheus-urls",
        default=_env("ALLOWED_PROMETHEUS_URLS", ""),
        help=(
            "comma-separated base URLs analyses may query; a spec's URL must match one's "
            "scheme, host, port and leading path segments (default: any URL)"
        ),
    )
    parser.add_argument(
        "--no-secret-access",
        action="store_true",
        default=_env("READ_SECRETS", "true") == "false",
        help=(
            "never read Secrets: specs that reference a bearer token, CA bundle or webhook "
            "URL in a Secret get an error instead"
        ),
    )
    parser.add_argument(
        "--lease-duration-seconds",
        type=int,
        default=int(_env("LEASE_DURATION_SECONDS", "15") or 15),
        help="how long a renewal holds the leader Lease; standbys wait this long",
    )
    parser.add_argument(
        "--renew-deadline-seconds",
        type=float,
        default=float(_env("RENEW_DEADLINE_SECONDS", "10") or 10),
        help="a leader that has not renewed for this long stops (less than the duration)",
    )
    parser.add_argument(
        "--retry-period-seconds",
        type=float,
        default=float(_env("RETRY_PERIOD_SECONDS", "2") or 2),
        help="seconds between Lease renewals, and between a standby's attempts",
    )
    args = parser.parse_args(argv)
    try:
        lease_timings = LeaseTimings(
            args.lease_duration_seconds, args.renew_deadline_seconds, args.retry_period_seconds
        )
    except ValueError as error:
        parser.error(
            f"{error} (set by --retry-period-seconds, --renew-deadline-seconds and "
            "--lease-duration-seconds)"
        )
    try:
        allowed = parse_allow_list(
            [u for u in args.allowed_prometheus_urls.split(",") if u.strip()]
        )
        if args.default_prometheus_url:
            Origin.parse(args.default_prometheus_url)
    except BadUrl as error:
        parser.error(str(error))
    return OperatorConfig(
        namespaces=list(dict.fromkeys(args.namespace)),
        kubeconfig=args.kubeconfig,
        default_image=args.default_image,
        default_prometheus_url=args.default_prometheus_url,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        bind_address=args.bind_address,
        leader_election=not args.no_leader_election,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        identity=args.identity,
        resync_seconds=args.resync_seconds,
        log_format=args.log_format,
        allowed_prometheus_urls=allowed,
        read_secrets=not args.no_secret_access,
        lease_timings=lease_timings,
    )
