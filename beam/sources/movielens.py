"""MovieLens 100K in the GroupLens directory format: u.data, u.item (latin-1), u.user."""
from __future__ import annotations

import os

import apache_beam as beam

from tworec import text as item_text
from tworec.beam import validate
from tworec.beam.config import RatingRange
from tworec.beam.records import Interaction, Item, User
from tworec.beam.sources import assemble, delimited_interaction, read_and_parse

DEFAULT_PATH = os.path.join("..", "shared", "data", "movielens-100k")

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
RATINGS = RatingRange(1.0, 5.0)


COLUMNS = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}


def parse_rating_line(text: str, origin: str) -> Interaction:
    return delimited_interaction(text, origin, "\t", COLUMNS, RATINGS)


def parse_item_line(text: str, origin: str) -> Item:
    fields = validate.columns(text.split("|"), 5 + len(GENRES))
    title = item_text.clean(fields[1])
    flags = fields[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise validate.Invalid(validate.Reject.MALFORMED_RECORD, "genre flags must be 0 or 1")
    genres = tuple(g for g, flag in zip(GENRES, flags) if flag == "1")
    return Item(
        item_id=validate.item_id(fields[0]),
        title=title,
        text=item_text.compose_item_text(title=title, categories=genres),
        categories=genres,
        origin=origin,
    )


def _age_bucket(age: int) -> str:
    for high, label in ((17, "under-18"), (24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54")):
        if age <= high:
            return label
    return "55+"


def parse_user_line(text: str, origin: str) -> User:
    fields = validate.columns(text.split("|"), 5)
    try:
        age = int(fields[1])
    except ValueError:
        raise validate.Invalid(validate.Reject.MALFORMED_RECORD, f"bad age {fields[1]!r}") from None
    attributes = [f"age:{_age_bucket(age)}", f"gender:{fields[2]}", f"occupation:{fields[3]}"]
    zip_code = fields[4].strip()
    if zip_code[:1].isdigit():
        attributes.append(f"zip1:{zip_code[0]}")
    return User(validate.user_id(fields[0]), tuple(attributes), origin)


class MovieLens100K(beam.PTransform):
    def __init__(self, path: str | None = None):
        super().__init__()
        self._path = path or DEFAULT_PATH

    def expand(self, pbegin):
        join = lambda name: os.path.join(self._path, name)  # noqa: E731
        interactions, bad_i, read_i = read_and_parse(
            pbegin, "Ratings", join("u.data"), "interaction", parse_rating_line)
        items, bad_m, read_m = read_and_parse(
            pbegin, "Items", join("u.item"), "item", parse_item_line, encoding="latin-1")
        users, bad_u, read_u = read_and_parse(
            pbegin, "Users", join("u.user"), "user", parse_user_line)
        return assemble(pbegin, interactions, items, users, (bad_i, bad_m, bad_u),
                        (read_i, read_m, read_u))
