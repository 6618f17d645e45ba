"""Field validators shared by every source. Each returns the parsed value or raises ``Invalid``
with the rejection reason, so a parser turns any bad field into one dead letter."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from tworec.beam.config import RatingRange
from tworec.contract import MAX_TIMESTAMP, MIN_TIMESTAMP, Reject, is_valid_id


class Invalid(ValueError):
    """A field that fails its rule; ``value`` is the parsed value where there is one (what the
    data job's summary uses to suggest a fix, e.g. the rating range that would accept it)."""

    def __init__(self, reason: Reject, detail: str, value: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.value = value


def user_id(value: str) -> str:
    value = value.strip()
    if not is_valid_id(value):
        raise Invalid(Reject.BAD_USER_ID, f"invalid user id {value[:40]!r}")
    return value


def item_id(value: str) -> str:
    value = value.strip()
    if not is_valid_id(value):
        raise Invalid(Reject.BAD_ITEM_ID, f"invalid item id {value[:40]!r}")
    return value


def timestamp(value: str) -> int:
    """Unix seconds (integer or decimal) or an ISO-8601 date/time (UTC unless it says otherwise)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(Reject.BAD_TIMESTAMP, f"unparsable timestamp {text[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    if not math.isfinite(seconds) or not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
        raise Invalid(Reject.BAD_TIMESTAMP, f"timestamp out of range {text[:40]!r}")
    return int(seconds)


def rating(value: str, allowed: RatingRange) -> float:
    text = value.strip()
    if not text:
        return 0.0
    try:
        parsed = float(text)
    except ValueError:
        raise Invalid(Reject.BAD_RATING, f"unparsable rating {text[:40]!r}") from None
    if not math.isfinite(parsed):
        raise Invalid(Reject.BAD_RATING, f"non-finite rating {text[:40]!r}")
    if parsed not in allowed:
        raise Invalid(Reject.RATING_OUT_OF_RANGE, f"rating {parsed:g} outside {allowed}", value=parsed)
    return parsed


def columns(fields: list, low: int, high: int | None = None) -> list:
    high = low if high is None else high
    if not low <= len(fields) <= high:
        want = str(low) if low == high else f"{low}-{high}"
        raise Invalid(Reject.WRONG_COLUMN_COUNT, f"expected {want} columns, got {len(fields)}")
    return fields
