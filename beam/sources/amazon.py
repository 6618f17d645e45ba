"""Amazon Review Data (2018), McAuley lab, per-category files: ``<Category>.csv`` ratings
(item,user,rating,timestamp; no header) and ``meta_<Category>.json.gz`` (one JSON object a line)."""
from __future__ import annotations

import glob
import json
import os

import apache_beam as beam

from tworec import text as item_text
from tworec.beam import validate
from tworec.beam.config import RatingRange
from tworec.beam.records import Interaction, Item
from tworec.beam.sources import assemble, delimited_interaction, read_and_parse
from tworec.contract import Reject

DEFAULT_PATH = os.path.join("..", "shared", "data", "amazon-2018-magazine-subscriptions")
RATINGS = RatingRange(1.0, 5.0)


COLUMNS = {"item": 0, "user": 1, "rating": 2, "timestamp": 3}


def parse_rating_line(text: str, origin: str) -> Interaction:
    return delimited_interaction(text, origin, ",", COLUMNS, RATINGS)


def _is_html_fragment(title: str) -> bool:
    # A known defect of this release: many titles are '<span class="a-size-medium ...' fragments.
    return title.lstrip().startswith("<")


def parse_meta_line(text: str, origin: str) -> Item:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise validate.Invalid(Reject.MALFORMED_RECORD, f"invalid JSON: {err.msg}") from None
    if not isinstance(meta, dict):
        raise validate.Invalid(Reject.MALFORMED_RECORD, "metadata line is not a JSON object")
    asin = validate.item_id(str(meta.get("asin", "")))
    raw_title = str(meta.get("title") or "")
    title = "" if _is_html_fragment(raw_title) else item_text.clean(raw_title)
    description = meta.get("description") or []
    if isinstance(description, str):
        description = [description]
    path = [item_text.clean(str(c)) for c in (meta.get("category") or [])]
    path = [c for c in path if c]
    brand = str(meta.get("brand") or "")
    text = item_text.compose_item_text(
        title=title,
        description=" ".join(str(d) for d in description),
        categories=[" > ".join(path)] if path else [],
        brand=brand,
    )
    return Item(asin, title or item_text.clean(brand) or asin, text, tuple(path), origin)


def _find(path: str, pattern: str, what: str) -> str:
    matches = sorted(glob.glob(os.path.join(path, pattern)))
    if not matches:
        raise FileNotFoundError(f"{path}: no {what} file matching {pattern}")
    return matches[0]


class Amazon2018(beam.PTransform):
    # Known defects of this release, reported but not held against the run's rejection limit: the
    # metadata lists many products twice, and ratings name products it lacks or repeat themselves.
    KNOWN_DEFECTS = frozenset({Reject.DUPLICATE_ITEM.value, Reject.UNKNOWN_ITEM.value, Reject.DUPLICATE.value})

    def __init__(self, path: str | None = None):
        super().__init__()
        self._path = path or DEFAULT_PATH

    def expand(self, pbegin):
        meta = _find(self._path, "meta_*.json*", "metadata (meta_<Category>.json.gz)")
        category = os.path.basename(meta)[len("meta_"):].split(".json")[0]
        ratings = _find(self._path, f"{category}.csv", "ratings (<Category>.csv)")
        interactions, bad_i, read_i = read_and_parse(
            pbegin, "Ratings", ratings, "interaction", parse_rating_line)
        items, bad_m, read_m = read_and_parse(pbegin, "Meta", meta, "item", parse_meta_line)
        return assemble(pbegin, interactions, items, None, (bad_i, bad_m), (read_i, read_m))
