"""Data sources. Each is a composite ``PTransform`` applied to the pipeline root that returns a dict:

    interactions: PCollection[Interaction]   rows that parsed and validated
    items:        PCollection[Item]          catalog rows (duplicates are removed later, counted)
    users:        PCollection[User]          user side data (may be empty)
    rejected:     PCollection[Rejection]     rows that failed parsing or validation
    read:         PCollection[(kind, n)]     rows read per kind, counted before parsing

``tworec.beam.config.SOURCES`` maps the ``--dataset`` names to their transform classes.
"""
from __future__ import annotations

import apache_beam as beam

from tworec.beam import records
from tworec.beam.io import ParseLines, ReadLines


def read_and_parse(pbegin, label: str, pattern: str, kind: str, parse, encoding="utf-8",
                   skip_header=False):
    """Read every line of ``pattern`` and parse it; returns (valid, rejected, read count)."""
    lines = pbegin | f"Read{label}" >> ReadLines(pattern, skip_header=skip_header)
    parsed = lines | f"Parse{label}" >> ParseLines(kind, parse, encoding)
    read = (
        lines
        | f"Count{label}" >> beam.combiners.Count.Globally()
        | f"Key{label}" >> beam.Map(lambda n: (kind, n))
    )
    return parsed[records.VALID], parsed[records.REJECTED], read


def delimited_interaction(text: str, origin: str, separator: str, columns: dict, ratings):
    """One interaction from a delimited line; ``columns`` maps user/item/rating/timestamp to
    field positions (rating optional)."""
    from tworec.beam import validate
    from tworec.beam.records import Interaction

    fields = validate.columns(text.split(separator), len(columns))
    return Interaction(
        user_id=validate.user_id(fields[columns["user"]]),
        item_id=validate.item_id(fields[columns["item"]]),
        timestamp=validate.timestamp(fields[columns["timestamp"]]),
        rating=validate.rating(fields[columns["rating"]], ratings) if "rating" in columns else 0.0,
        origin=origin,
    )


def assemble(pbegin, interactions, items, users=None, rejected=(), read=()):
    """The dict every source returns; missing parts become empty PCollections."""
    if users is None:
        users = pbegin | "NoUsers" >> beam.Create([])
    rejected = list(rejected) or [pbegin | "NoRejections" >> beam.Create([])]
    read = list(read) or [pbegin | "NothingRead" >> beam.Create([])]
    return {
        "interactions": interactions,
        "items": items,
        "users": users,
        "rejected": tuple(rejected) | "FlattenRejected" >> beam.Flatten(),
        "read": tuple(read) | "FlattenRead" >> beam.Flatten(),
    }


def known_defects(name: str) -> frozenset:
    """Rejection reasons a dataset's source declares as known defects of its release: reported, but
    not held against the run's rejection limit (only published datasets declare any)."""
    return getattr(get_source(name), "KNOWN_DEFECTS", frozenset())


def get_source(name: str):
    """The source transform class of a ``--dataset`` name (``tworec.beam.config.SOURCES``)."""
    import importlib

    from tworec.beam.config import SOURCES

    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(SOURCES))}")
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
