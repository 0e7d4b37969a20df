"""The metrics history query: ``since``, ``until`` and ``step`` as the API and the CLI accept them.

Times: a duration back from now (``90s``, ``15m``, ``6h``, ``7d``, ``2w``), an ISO 8601 time
(``2026-12-01T10:00:00Z``; without a zone: UTC) or seconds since the epoch. Steps: a duration or seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from kvmkit.errors import InvalidInput

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_SINCE = "1h"
MAX_POINTS = 10_000
LATEST = 253402300799  # 9999-12-31T23:59:59Z
TARGET_POINTS = 360  # default step: about this many points over the range
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_duration(text: str | int | float, what: str = "step") -> int:
    """``'5m'`` -> 300; a bare number is seconds."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"] if match else 0
    if not match or seconds < 1 or seconds > 366 * 86400:
        raise InvalidInput(f"invalid {what} {text!r}",
                           hint="give a duration such as 10s, 5m, 1h or 7d (or seconds), at least 1 s")
    return int(seconds)


def parse_time(text: str, now: float, what: str = "since") -> int:
    """A point in time, as seconds since the epoch: ``'1h'`` (an hour ago), ISO 8601, or epoch seconds."""
    value = str(text).strip()
    match = _DURATION.fullmatch(value.lower())
    if match and match.group(2):
        return int(now) - parse_duration(value, what)
    hint = ("give a duration back from now (30m, 6h, 7d), an ISO 8601 time (2026-12-01T10:00:00Z) or seconds "
            "since the epoch")
    if re.fullmatch(r"\d{1,20}(\.\d+)?", value):
        seconds = int(float(value))
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = int(moment.timestamp())
        except (ValueError, OverflowError):
            raise InvalidInput(f"invalid {what} {text!r}", hint=hint) from None
    if not 0 <= seconds <= LATEST:
        raise InvalidInput(f"{what} {text!r} is out of range (1970 to 9999)", hint=hint)
    return seconds


@dataclass
class HistoryRange:
    since: int
    until: int
    step: int


def history_range(since: str | None, until: str | None, step: str | None, now: float) -> HistoryRange:
    """The range and step of a history query (defaults: the last hour, about 360 points)."""
    start = parse_time(since or DEFAULT_SINCE, now, "since")
    end = parse_time(until, now, "until") if until else int(now) + 1
    if end <= start:
        raise InvalidInput(f"'until' ({end}) is not after 'since' ({start})",
                           hint="give since earlier than until, e.g. since=6h and no until (now)")
    seconds = parse_duration(step, "step") if step else max(1, math.ceil((end - start) / TARGET_POINTS))
    if (end - start) / seconds > MAX_POINTS:
        raise InvalidInput(f"step {seconds} s over {end - start} s would give more than {MAX_POINTS} points",
                           hint=f"give a larger step (at least {math.ceil((end - start) / MAX_POINTS)} s) or a "
                                "shorter range")
    return HistoryRange(start, end, seconds)
