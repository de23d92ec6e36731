"""The command line of `kubectl modeldeploy` (console script `kubectl-modeldeploy`).

Exit codes: 0 done; 1 refused (the verb cannot change anything now) or, for `status`,
the rollout failed; 2 `status` timed out; 3 the request could not be made (bad
arguments, object or CRD not found, no credentials, API errors); 130 interrupted."""

from __future__ import annotations

import argparse
import math
import os
import queue
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from modeldeploy.cli.cluster import WATCH_SECONDS, CliError, Cluster, connect
from modeldeploy.cli.decide import (
    Refusal,
    Result,
    Verb,
    plan,
    progress_line,
    result_line,
    rollout_result,
)
from modeldeploy.cli.render import plain_lines, rows_table, view_renderable
from modeldeploy.cli.state import Json, Rollout
from modeldeploy.cli.text import human_age, parse_duration
from modeldeploy.cli.view import (
    HISTORY_COLUMNS,
    LIST_COLUMNS,
    Snapshot,
    build_view,
    history_rows,
    list_rows,
)
from modeldeploy.cli.winner import (
    applied_lines,
    precondition,
    refuse_to_apply,
    winner_patch,
)

INTERRUPTED = 130
PIPE_WIDTH = 200
# Re-render a terminal this often between changes, so ages stay true.
TICK_SECONDS = 1.0
# Changes arriving this close together are shown as one.
SETTLE_SECONDS = 0.2
# A fixed time for comparing two views by content alone, ages aside.
_COMPARE_AT = datetime(2000, 1, 1, tzinfo=UTC)


class Parser(argparse.ArgumentParser):
    """Usage errors exit 3, keeping 1 and 2 for what `status` reports."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(Result.ERROR, f"{self.prog}: error: {message}\n")


def _timeout(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before and after the verb, as kubectl does; the verb's copy must not
    # overwrite a value given before it, hence SUPPRESS below the top.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context to use")
    parser.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="kubectl modeldeploy",
        description="Watch and steer ModelDeployment rollouts.",
        epilog="Exit codes: 0 done, 1 refused or rollout failed, 2 status timed out, "
        "3 could not ask the API server.",
    )
    _connection_options(parser, top=True)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, summary: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=summary, description=summary)
        _connection_options(sub, top=False)
        return sub

    get = verb("get", "show a ModelDeployment as a tree: tracks, pods, weights, checks, events")
    get.add_argument("name")
    get.add_argument("-w", "--watch", action="store_true", help="re-render at each change")
    promote = verb("promote", "move the canary one step now (--full: promote it at once)")
    promote.add_argument("name")
    promote.add_argument("--full", action="store_true", help="skip every remaining step")
    for name, summary in (
        ("abort", "roll the canary back now, or stop a running experiment"),
        ("retry", "try a rolled-back revision again, or run a finished experiment again"),
        ("pause", "hold canaries at their step (this one and later ones)"),
        ("resume", "lift a pause request"),
        ("history", "show the last outcomes (status.history)"),
    ):
        verb(name, summary).add_argument("name")
    status = verb(
        "status",
        "wait until this generation is rolled out (exit 0), failed (1) or --timeout (2)",
    )
    status.add_argument("name")
    status.add_argument(
        "--timeout",
        type=_timeout,
        default=0.0,
        help="how long to wait, e.g. 30m (default 0: no limit)",
    )
    winner = verb(
        "apply-winner",
        "make a concluded experiment's winner the model (status.experiment.winnerPatch), "
        "rolled out as a canary",
    )
    winner.add_argument("name")
    winner.add_argument(
        "--dry-run",
        action="store_true",
        help="print the patch only (for a manifest in Git), change nothing",
    )
    winner.add_argument(
        "--force",
        action="store_true",
        help="patch an object a GitOps tool or Helm applies (its next sync reverts it)",
    )
    listing = verb(
        "list", "list ModelDeployments with phase, versions, step, weights and experiment"
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):
        # `kubectl modeldeploy get x | head` ends quietly, as other command-line tools do.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    console = make_console()
    try:
        cluster = connect(args.kubeconfig, args.context, args.namespace)
        return int(run(args, cluster, console))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return Result.ERROR
    except KeyboardInterrupt:
        return INTERRUPTED


def make_console() -> Console:
    """A terminal's own width; a pipe or file gets long lines rather than wrapped
    columns, as kubectl prints them, unless COLUMNS says otherwise."""
    console = Console(highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(highlight=False, width=PIPE_WIDTH)


def emit(console: Console, renderable: RenderableType) -> None:
    if console.is_terminal:
        console.print(renderable)
    else:
        print(plain_lines(console, renderable), flush=True)


def run(args: argparse.Namespace, cluster: Cluster, console: Console) -> int:
    verb: str = args.verb
    if verb == "get" and args.watch:
        return watch_view(cluster, args.name, console)
    if verb == "get":
        return show(cluster, args.name, console)
    if verb == "status":
        return wait_for_outcome(cluster, args.name, args.timeout, console)
    if verb == "history":
        return history(cluster, args.name, console)
    if verb == "list":
        return listing(cluster, args.all_namespaces, console)
    if verb == "apply-winner":
        return apply_winner(cluster, args.name, args.dry_run, args.force, console)
    chosen = Verb.PROMOTE_FULL if verb == "promote" and args.full else Verb(verb)
    return request(cluster, args.name, chosen, console)


def request(cluster: Cluster, name: str, verb: Verb, console: Console) -> int:
    rollout = Rollout.of(cluster.get(name))
    planned = plan(verb, rollout, datetime.now(UTC))
    if isinstance(planned, Refusal):
        print(f"refused: {planned.message}", file=sys.stderr)
        return Result.FAILED
    cluster.annotate(name, planned.annotation, planned.value)
    said = Text(f"modeldeployment {name} in {cluster.namespace}: {planned.said} ")
    said.append(f"({planned.annotation}={planned.value})", style="dim")
    console.print(said, soft_wrap=True)
    for note in planned.notes:
        console.print(Text(f"note: {note}"), soft_wrap=True)
    return Result.SUCCEEDED


def apply_winner(cluster: Cluster, name: str, dry_run: bool, force: bool, console: Console) -> int:
    """Apply the concluded experiment's winnerPatch as a merge patch; --dry-run prints it."""
    md = cluster.get(name)
    planned = winner_patch(Rollout.of(md))
    if isinstance(planned, Refusal):
        print(f"refused: {planned.message}", file=sys.stderr)
        return Result.FAILED
    if dry_run:
        # only the patch, so that it can be piped or saved as it is
        print(planned.text, flush=True)
        return Result.SUCCEEDED
    refused = refuse_to_apply(md, planned, force)
    if refused is not None:
        print(f"refused: {refused.message}", file=sys.stderr)
        return Result.FAILED
    patched = cluster.merge_patch(name, precondition(planned, md))
    for line in applied_lines(md, patched, planned):
        console.print(Text(line), soft_wrap=True)
    return Result.SUCCEEDED


def history(cluster: Cluster, name: str, console: Console) -> int:
    rows = history_rows(cluster.get(name), datetime.now(UTC))
    if rows:
        emit(console, rows_table(HISTORY_COLUMNS, rows))
    else:
        console.print(Text(f"modeldeployment {name} has no history yet"))
    return Result.SUCCEEDED


def listing(cluster: Cluster, all_namespaces: bool, console: Console) -> int:
    items = cluster.list(all_namespaces)
    if not items:
        where = "any namespace" if all_namespaces else f"namespace {cluster.namespace}"
        console.print(Text(f"no ModelDeployments in {where}"))
        return Result.SUCCEEDED
    columns = ("NAMESPACE", *LIST_COLUMNS) if all_namespaces else LIST_COLUMNS
    emit(console, rows_table(columns, list_rows(items, datetime.now(UTC), all_namespaces)))
    return Result.SUCCEEDED


def show(cluster: Cluster, name: str, console: Console) -> int:
    emit(
        console,
        view_renderable(build_view(cluster.snapshot(name), datetime.now(UTC)), console.width),
    )
    return Result.SUCCEEDED


def watch_view(cluster: Cluster, name: str, console: Console) -> int:
    """Re-render at every change the watches report, until Ctrl-C. A terminal gets one
    live display; a pipe or file gets each new state appended, as `kubectl get -w` does."""
    snapshot = cluster.snapshot(name)  # a failure before the first picture ends the command
    changes: queue.Queue[str] = queue.Queue()
    cluster.notify_changes(name, changes)
    problem: str | None = None
    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(_frame(snapshot, problem, console.width), refresh=True)
                if _changed(changes, TICK_SECONDS):
                    snapshot, problem = _read(cluster, name, snapshot)
    shown = None
    while True:
        compare = (build_view(snapshot, _COMPARE_AT), problem)
        if compare != shown:
            if shown is not None:
                print()
            emit(console, _frame(snapshot, problem, console.width))
            shown = compare
        _changed(changes, None)
        snapshot, problem = _read(cluster, name, snapshot)


def _changed(changes: queue.Queue[str], wait: float | None) -> bool:
    """Wait for a change (at most `wait` seconds); swallow the burst that follows it."""
    try:
        changes.get(timeout=wait)
    except queue.Empty:
        return False
    time.sleep(SETTLE_SECONDS)
    while not changes.empty():
        changes.get_nowait()
    return True


def _read(cluster: Cluster, name: str, last: Snapshot) -> tuple[Snapshot, str | None]:
    """A fresh picture; on failure the last one, with the error shown under it."""
    try:
        return cluster.snapshot(name), None
    except CliError as e:
        return last, str(e)


def _frame(snapshot: Snapshot, problem: str | None, width: int) -> RenderableType:
    parts = [view_renderable(build_view(snapshot, datetime.now(UTC)), width)]
    if problem is not None:
        parts.append(Text(f"error: {problem} (still watching)", style="bold red"))
    return Group(*parts)


def wait_for_outcome(cluster: Cluster, name: str, timeout: float, console: Console) -> int:
    """Follow the object until its generation is rolled out, fails, or time runs out,
    printing a line whenever where it stands changes."""
    deadline = time.monotonic() + timeout if timeout > 0 else math.inf
    printed: str | None = None

    def report(md: Json) -> Result | None:
        nonlocal printed
        rollout = Rollout.of(md)
        result = rollout_result(rollout)
        line = progress_line(rollout) if result is None else result_line(rollout, result)
        if line != printed:
            console.print(Text(line), soft_wrap=True)
            printed = line
        return result

    md = cluster.get(name)
    while True:
        result = report(md)
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            console.print(Text(f"{name}: timed out after {human_age(timeout)}"), soft_wrap=True)
            return Result.TIMED_OUT
        version = str((md.get("metadata") or {}).get("resourceVersion", ""))
        for seen in cluster.follow(name, min(remaining, WATCH_SECONDS), version):
            if seen is None:
                raise CliError(
                    f"modeldeployment {name} was deleted from namespace {cluster.namespace}"
                )
            md = seen
            result = report(md)
            if result is not None:
                return result
        # The watch ended: its time is up, or its resource version expired.
        md = cluster.get(name)
