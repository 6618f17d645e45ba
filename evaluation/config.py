"""Typed configuration of ``tworec eval``: every setting once, with its reason (tworec.settings)."""
from __future__ import annotations

from dataclasses import dataclass

from tworec.settings import setting


@dataclass(frozen=True)
class EvalConfig:
    max_queries: int = setting(0, "test queries judged per protocol (0: all); on large runs the first ones in "
                                  "file order, i.e. whole users in a stable hash order, bound eval's cost")
