"""A user's own data as CSV files (UTF-8, a header line, one record per line):

    interactions.csv  user_id,item_id,timestamp[,rating]
    items.csv         item_id,title[,text][,categories]      categories separated by "|"
    users.csv         user_id[,any other columns]             optional; each column becomes "name:value"

Columns are found by their header names, in any order. ``timestamp`` is unix seconds or ISO 8601.
"""
from __future__ import annotations

import csv

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from tworec import text as item_text
from tworec.beam import validate
from tworec.beam.config import RatingRange
from tworec.beam.records import Interaction, Item, User
from tworec.beam.sources import assemble, read_and_parse
from tworec.contract import Reject
from tworec.errors import UserError

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "title")


class CsvFormatError(UserError, ValueError):
    pass


def read_header(path: str, required: tuple) -> dict:
    with FileSystems.open(path) as handle:
        first = handle.readline().decode("utf-8-sig").strip()
    names = [n.strip().lower() for n in next(csv.reader([first]), [])]
    missing = [c for c in required if c not in names]
    if missing:
        raise CsvFormatError(
            f"{path}: header line must name the columns {', '.join(required)} "
            f"(missing {', '.join(missing)}; found {', '.join(names) or 'nothing'})"
        )
    return {name: i for i, name in enumerate(names)}


def _fields(text: str, columns: dict) -> list:
    try:
        fields = next(csv.reader([text]))
    except csv.Error as err:
        raise validate.Invalid(Reject.MALFORMED_RECORD, f"bad CSV: {err}") from None
    return validate.columns(fields, len(columns))


class _InteractionParser:
    def __init__(self, columns: dict, ratings: RatingRange):
        self.columns, self.ratings = columns, ratings

    def __call__(self, text: str, origin: str) -> Interaction:
        f = _fields(text, self.columns)
        c = self.columns
        return Interaction(
            user_id=validate.user_id(f[c["user_id"]]),
            item_id=validate.item_id(f[c["item_id"]]),
            timestamp=validate.timestamp(f[c["timestamp"]]),
            rating=validate.rating(f[c["rating"]], self.ratings) if "rating" in c else 0.0,
            origin=origin,
        )


class _ItemParser:
    def __init__(self, columns: dict):
        self.columns = columns

    def __call__(self, text: str, origin: str) -> Item:
        f = _fields(text, self.columns)
        c = self.columns
        title = item_text.clean(f[c["title"]])
        body = f[c["text"]] if "text" in c else ""
        categories = tuple(
            x for x in (item_text.clean(s) for s in f[c["categories"]].split("|")) if x
        ) if "categories" in c else ()
        text_ = item_text.compose_item_text(title=title, description=body, categories=categories)
        if not text_:
            raise validate.Invalid(Reject.MISSING_TEXT, "item has neither title nor text")
        return Item(validate.item_id(f[c["item_id"]]), title, text_, categories, origin)


class _UserParser:
    def __init__(self, columns: dict):
        self.columns = columns

    def __call__(self, text: str, origin: str) -> User:
        f = _fields(text, self.columns)
        attributes = tuple(
            f"{name}:{item_text.clean(f[i])}"
            for name, i in sorted(self.columns.items(), key=lambda kv: kv[1])
            if name != "user_id" and item_text.clean(f[i])
        )
        return User(validate.user_id(f[self.columns["user_id"]]), attributes, origin)


class CsvFiles(beam.PTransform):
    def __init__(self, path: str, ratings: RatingRange | None = None):
        super().__init__()
        if not path:
            raise CsvFormatError("--input is required for --dataset csv (a folder with "
                                 "interactions.csv and items.csv)")
        self._path = path
        self._ratings = ratings or RatingRange(0.0, 5.0)

    def expand(self, pbegin):
        join = lambda name: FileSystems.join(self._path, name)  # noqa: E731
        inter_cols = read_header(join("interactions.csv"), INTERACTION_COLUMNS)
        item_cols = read_header(join("items.csv"), ITEM_COLUMNS)
        interactions, bad_i, read_i = read_and_parse(
            pbegin, "Interactions", join("interactions.csv"), "interaction",
            _InteractionParser(inter_cols, self._ratings), skip_header=True)
        items, bad_m, read_m = read_and_parse(
            pbegin, "Items", join("items.csv"), "item", _ItemParser(item_cols), skip_header=True)
        rejected, read, users = [bad_i, bad_m], [read_i, read_m], None
        if FileSystems.exists(join("users.csv")):
            user_cols = read_header(join("users.csv"), ("user_id",))
            users, bad_u, read_u = read_and_parse(
                pbegin, "Users", join("users.csv"), "user", _UserParser(user_cols),
                skip_header=True)
            rejected.append(bad_u)
            read.append(read_u)
        return assemble(pbegin, interactions, items, users, rejected, read)
