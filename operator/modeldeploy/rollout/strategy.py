"""The one interface every strategy implements for the shared machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine
    from modeldeploy.rollout.model import Decision, Observation, Track


class Strategy(Protocol):
    def start(self, m: Machine, why: str) -> Decision:
        """A new revision begins its way to stable; `why` completes the start event."""

    def progress(self, m: Machine) -> Decision:
        """The revision under way, neither promoting nor superseded: the next move."""

    def promote_step(self, m: Machine) -> Decision:
        """A user's request to move one step on."""

    def start_promotion(self, m: Machine, why: str) -> Decision:
        """The revision passed (or a user said so): it becomes the stable."""

    def promoting(self, m: Machine) -> Decision:
        """A promotion under way."""

    def abortable(self, m: Machine) -> bool:
        """Whether an abort can still take the revision under way back."""

    def analysis_due(self, o: Observation) -> bool:
        """Whether the shell should run an analysis before deciding."""

    def analysis_track(self, o: Observation) -> Track:
        """The track whose series the analysis reads."""
