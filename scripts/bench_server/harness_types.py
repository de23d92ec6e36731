"""What the benchmark sections need of run.py's servers and wrk results (run.py holds the
real classes; the sections see them through these)."""

from typing import Protocol


class ServerLike(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def port(self) -> int: ...


class ResultLike(Protocol):
    @property
    def requests_per_second(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def cpu_percent(self) -> float: ...
    @property
    def errors(self) -> int: ...
