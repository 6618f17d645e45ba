"""Typed records that flow between the data pipeline's transforms."""
from __future__ import annotations

import json
from typing import NamedTuple


class Interaction(NamedTuple):
    user_id: str
    item_id: str
    timestamp: int
    rating: float  # 0.0 when the source has no explicit rating
    origin: str  # "file:line" (or generator position), for dead letters named later on


class Item(NamedTuple):
    item_id: str
    title: str
    text: str
    categories: tuple
    origin: str


class User(NamedTuple):
    user_id: str
    attributes: tuple
    origin: str


class Rejection(NamedTuple):
    kind: str  # "interaction", "item" or "user"
    reason: str  # a tworec.contract.Reject value
    origin: str
    detail: str
    raw: str
    value: float | None = None  # the rejected field's parsed value, where there is one (a rating)

    def to_json(self) -> str:
        return json.dumps(self._asdict(), ensure_ascii=False, sort_keys=True)


# Tags of the parsers' outputs.
VALID = "valid"
REJECTED = "rejected"
