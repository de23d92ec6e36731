"""Formatting of ages, durations, numbers and check bounds: pure, no I/O."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration as kubectl takes it (`90s`, `10m`, `1h30m`, `0`)."""
    cleaned = text.strip()
    if cleaned == "0":
        return 0.0
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(
            f"{text!r} is not a duration: use a number with a unit, e.g. 90s, 10m or 1h30m"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_age(seconds: float) -> str:
    """An age the way kubectl prints one (`45s`, `3m12s`, `5h`, `3d4h`)."""
    s = max(0, int(seconds))
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age_since(value: object, now: datetime) -> str:
    """The age of a timestamp field; empty when it is absent."""
    then = parse_time(value)
    return "" if then is None else human_age((now - then).total_seconds())


def utc_stamp(at: datetime) -> str:
    """`2026-03-01 12:28:00 UTC`"""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(at: datetime, now: datetime) -> str:
    """A time with how far it is from now: `2026-03-01 12:28:00 UTC (in 28m)`, `(5m ago)`."""
    ahead = (at - now).total_seconds()
    distance = f"in {human_age(ahead)}" if ahead > 0 else f"{human_age(-ahead)} ago"
    return f"{utc_stamp(at)} ({distance})"


def number(value: object) -> str:
    """A check value or bound, short and exact enough to compare by eye."""
    if value is None:
        return "none"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def bounds(minimum: object, maximum: object) -> str:
    """The passing range of a check: `max 0.01`, `min 0.9` or `0.1..0.9`."""
    if minimum is not None and maximum is not None:
        return f"{number(minimum)}..{number(maximum)}"
    if maximum is not None:
        return f"max {number(maximum)}"
    if minimum is not None:
        return f"min {number(minimum)}"
    return "no bounds"


def percent(value: object) -> str:
    return "?" if value is None else f"{value}%"
