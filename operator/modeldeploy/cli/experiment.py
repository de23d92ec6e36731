"""An A/B experiment as the plugin reads it (status.experiment), and its numbers in words:
pure, no I/O.

The operator runs the experiment and judges it; the plugin only shows what it wrote:
each arm's traffic and pods while it runs, and once judged each variant's success rate
against control's with their intervals, the Holm-adjusted p-value and the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeldeploy.cli.text import number, parse_time

CONTROL = "control"
RUNNING = "Running"
CONCLUDED = "Concluded"
STOPPED = "Stopped"
CUT = "Cut"
BETTER = "Better"
DEFAULT_SIGNIFICANCE = 0.05


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: object) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Arm:
    """control or a variant: its traffic, its pods, and once judged its numbers."""

    name: str
    version: str
    weight: int
    actual_weight: int | None
    replicas: int
    ready_replicas: int
    state: str
    reason: str
    successes: int | None = None
    samples: int | None = None
    rate: float | None = None
    rate_low: float | None = None
    rate_high: float | None = None
    difference: float | None = None
    difference_low: float | None = None
    difference_high: float | None = None
    p_value: float | None = None
    adjusted_p_value: float | None = None
    outcome: str | None = None

    @property
    def cut(self) -> bool:
        return self.state == CUT

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Arm:
        return cls(
            name=_text(raw.get("name")) or "?",
            version=_text(raw.get("version")) or "?",
            weight=_int(raw.get("weight")),
            actual_weight=_opt_int(raw.get("actualWeight")),
            replicas=_int(raw.get("replicas")),
            ready_replicas=_int(raw.get("readyReplicas")),
            state=_text(raw.get("state")) or RUNNING,
            reason=_text(raw.get("reason")),
            successes=_opt_int(raw.get("successes")),
            samples=_opt_int(raw.get("samples")),
            rate=_opt_float(raw.get("rate")),
            rate_low=_opt_float(raw.get("rateLow")),
            rate_high=_opt_float(raw.get("rateHigh")),
            difference=_opt_float(raw.get("difference")),
            difference_low=_opt_float(raw.get("differenceLow")),
            difference_high=_opt_float(raw.get("differenceHigh")),
            p_value=_opt_float(raw.get("pValue")),
            adjusted_p_value=_opt_float(raw.get("adjustedPValue")),
            outcome=_text(raw.get("outcome")) or None,
        )


@dataclass(frozen=True)
class Experiment:
    id: str
    attempt: int
    phase: str
    message: str
    started_at: datetime | None
    ready_at: datetime | None
    ends_at: datetime | None
    concluded_at: datetime | None
    metric: str
    control: Arm
    variants: tuple[Arm, ...]
    winner: str | None
    winner_patch: str | None

    @property
    def running(self) -> bool:
        return self.phase == RUNNING

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.control, *self.variants)

    @property
    def judged(self) -> bool:
        """Whether any arm has numbers (the verdict, or counts read at `duration`)."""
        return any(a.samples is not None or a.rate is not None for a in self.arms)

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    @classmethod
    def of(cls, value: object) -> Experiment | None:
        raw = _dict(value)
        if not raw:
            return None
        control = _dict(raw.get("control"))
        return cls(
            id=_text(raw.get("id")),
            attempt=_int(raw.get("attempt")) or 1,
            phase=_text(raw.get("phase")) or RUNNING,
            message=_text(raw.get("message")),
            started_at=parse_time(raw.get("startedAt")),
            ready_at=parse_time(raw.get("readyAt")),
            ends_at=parse_time(raw.get("endsAt")),
            concluded_at=parse_time(raw.get("concludedAt")),
            metric=_text(raw.get("metric")),
            control=Arm.of(control or {"name": CONTROL}),
            variants=tuple(Arm.of(v) for v in raw.get("variants") or [] if isinstance(v, dict)),
            winner=_text(raw.get("winner")) or None,
            winner_patch=_text(raw.get("winnerPatch")) or None,
        )


def significance_of(spec: dict[str, Any]) -> float | None:
    """The spec's significance level, while the spec still runs an experiment: the
    intervals in status are at 1 - significance (the status does not record it)."""
    strategy = _dict(spec.get("strategy"))
    block = _dict(strategy.get("experiment"))
    if strategy.get("type") != "experiment" or not block:
        return None
    return _opt_float(block.get("significance")) or DEFAULT_SIGNIFICANCE


def confidence_text(significance: float | None) -> str:
    """`95%`, or `1 - significance` once the spec no longer says what it was."""
    if significance is None:
        return "1 - significance"
    return f"{(1 - significance) * 100:.4g}%"


def share(value: float | None) -> str:
    """A rate as a percentage: `4.12%`."""
    return "?" if value is None else f"{value * 100:.2f}%"


def points(value: float | None) -> str:
    """A difference of rates in percentage points, signed: `+0.81`."""
    return "?" if value is None else f"{value * 100:+.2f}"


def rate_text(arm: Arm) -> str:
    """`4.12% [3.98..4.27]`: the rate and its Wilson interval, in percent."""
    if arm.rate is None:
        return "none"
    words = share(arm.rate)
    if arm.rate_low is not None and arm.rate_high is not None:
        words += f" [{arm.rate_low * 100:.2f}..{arm.rate_high * 100:.2f}]"
    return words


def difference_text(arm: Arm) -> str:
    """`+0.81 pp [+0.52..+1.10]`: rate - control's rate and its Newcombe interval."""
    if arm.difference is None:
        return "none"
    words = f"{points(arm.difference)} pp"
    if arm.difference_low is not None and arm.difference_high is not None:
        words += f" [{points(arm.difference_low)}..{points(arm.difference_high)}]"
    return words


def samples_text(arm: Arm) -> str:
    """`412/10000`: successes out of trials, as counted for the arm."""
    if arm.samples is None:
        return "none"
    if arm.successes is None:
        return f"?/{arm.samples}"
    return f"{arm.successes}/{arm.samples}"


def p_text(value: float | None) -> str:
    return "none" if value is None else number(value)


def weight_text(arm: Arm) -> str:
    """`20% (achieved 18%)`: the share the operator set and the one the router achieved."""
    if arm.cut:
        return "cut"
    achieved = "?" if arm.actual_weight is None else f"{arm.actual_weight}%"
    return f"{arm.weight}% (achieved {achieved})"


def arm_outcome_text(arm: Arm) -> str:
    """A variant's verdict in a few words, for refusals and one-line summaries."""
    if arm.cut:
        return f"{arm.name} cut: {arm.reason or 'failed its SLO checks'}"
    if arm.outcome is None:
        return f"{arm.name} not judged"
    words = f"{arm.name} {arm.outcome}"
    details = []
    if arm.difference is not None:
        details.append(f"{difference_text(arm)} vs control")
    if arm.adjusted_p_value is not None:
        details.append(f"adjusted p {p_text(arm.adjusted_p_value)}")
    if arm.difference is None and arm.samples is not None:
        details.append(f"{arm.samples} samples")
    return f"{words} ({', '.join(details)})" if details else words


def list_text(experiment: Experiment) -> str:
    """The experiment in a `list` cell."""
    if experiment.running:
        cut = sum(1 for v in experiment.variants if v.cut)
        total = len(experiment.variants)
        return f"Running, {cut} of {total} variants cut" if cut else f"Running, {total} variants"
    if experiment.phase == CONCLUDED:
        winner = experiment.winner
        return f"Concluded, {winner} wins" if winner else "Concluded, no winner"
    return experiment.phase
