"""How long a traffic switch took as the clients saw it (pure: no cluster).

The load generator records every request's start time and the model version that answered
it (``tests/node/load.py``). A switch is decided at one moment (the operator's
``status.canary.switchedAt``, or the ``at`` of the history entry of a switch-back); it is
complete, for the clients, once the side it moved away from answers no more requests.
Every request opens a new connection, and kube-proxy picks the pod when the connection
is made, so a request's start time is when its route was chosen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from tests.node.load import Outcome


def unix_time(rfc3339: str) -> float:
    """A Kubernetes or operator timestamp (`...Z`, with or without fractions) as unix time."""
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Switch:
    decided: float  # unix time of the decision
    # start of the last request that the side switched away from answered, if any came
    # after the decision
    last_from: float | None
    answered_after: int  # requests that side answered that started after the decision

    @property
    def seconds(self) -> float:
        """From the decision to the last request the old side answered (0: none after it)."""
        return 0.0 if self.last_from is None else self.last_from - self.decided


def switch_of(
    outcomes: Iterable[Outcome], decided: float, away: Callable[[Outcome], bool]
) -> Switch:
    """The switch decided at `decided`, away from the side whose answers `away` picks."""
    late = [o.at for o in outcomes if o.at >= decided and away(o)]
    return Switch(decided, max(late) if late else None, len(late))


def between(outcomes: Iterable[Outcome], start: float, end: float) -> list[Outcome]:
    """The requests that started in [start, end)."""
    return [o for o in outcomes if start <= o.at < end]


def by_answer(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Requests per answer: the version for a served one, else the status or error kind."""
    return dict(Counter(o.version or o.error or str(o.status) for o in outcomes))
