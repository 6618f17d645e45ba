"""The gateway's event log as a data source, joined to a previous data folder: the next training
sees the interactions it was built from and what users did since.

    --dataset events --input LOG_DIR --catalog DATA_DIR

- interactions: DATA_DIR's (every temporal split) from before the log's first event, and the log's
  clicks, add-to-carts, purchases and ratings (a rating's value is its rating); an event id logged
  twice (a re-send to two replicas) is rejected as ``duplicate_event``. DATA_DIR's interactions
  from the log's time on are left out (counted as read kind ``superseded_by_log``): the log is what
  happened since the served model was deployed;
- items: DATA_DIR's catalog with the log's UpsertItems applied: an item's latest upsert replaces
  its earlier definitions (each replaced one is counted as read kind ``item_update``);
- users: DATA_DIR's.

Impressions, removals and exploration decisions are read and counted (``read``: impression,
catalog_change) but are not interactions. Every log line is accounted for: read = written + rejected, per kind.
"""
from __future__ import annotations

import json

import apache_beam as beam

from tworec import contract, example_codec, text as item_text
from tworec.beam import records, validate
from tworec.beam.io import ReadLines
from tworec.beam.records import Interaction, Item, Rejection, User
from tworec.beam.sequences import origin_key
from tworec.beam.sources import assemble
from tworec.beam.spill import GroupByKeyOnDisk
from tworec.contract import Event, EventType, Reject
from tworec.layout import DataLayout
from tworec.live.event_log import segment_pattern

INTERACTION, ITEM, IMPRESSION, CHANGE = "interaction", "item", "impression", "catalog_change"


class ParseLogLine(beam.DoFn):
    """A log line → tagged outputs: INTERACTION (event id, Interaction), ITEM, IMPRESSION, CHANGE
    (counted, not used) or a REJECTED record."""

    def process(self, line):
        def reject(kind, reason, detail):
            return beam.pvalue.TaggedOutput(records.REJECTED, Rejection(
                kind, reason, line.origin, detail, line.data.decode("utf-8", "replace")[:500]))

        try:
            record = json.loads(line.data)
            kind = record.get("kind", "event")
        except (ValueError, AttributeError):
            yield reject(INTERACTION, Reject.MALFORMED_RECORD.value, "not a JSON object")
            return
        if kind == "upsert":
            for j, item in enumerate(record.get("items") or []):
                yield beam.pvalue.TaggedOutput(ITEM, _upserted_item(item, f"{line.origin}#{j}"))
        elif kind in ("remove", "decision"):
            yield beam.pvalue.TaggedOutput(CHANGE, line.origin)
        elif kind == "event":
            try:
                event = Event.from_json(record)
            except (KeyError, ValueError, TypeError):
                yield reject(INTERACTION, Reject.MALFORMED_RECORD.value, "not an event")
                return
            problem = contract.event_problem(event, contract.MAX_TIMESTAMP, 0)
            if problem is not None:
                yield reject(INTERACTION, problem.value, f"event {event.event_id}: {problem.value}")
            elif event.type is EventType.IMPRESSION:
                yield beam.pvalue.TaggedOutput(IMPRESSION, event.event_id)
            else:
                rating = float(event.value) if event.type is EventType.RATING and event.value is not None else 0.0
                yield beam.pvalue.TaggedOutput(INTERACTION, (event.event_id, Interaction(
                    event.user_id, event.item_id, event.timestamp, rating, line.origin)))
        else:
            yield reject(INTERACTION, Reject.MALFORMED_RECORD.value, f"unknown record kind {kind!r}")


def _upserted_item(record: dict, origin: str):
    try:
        item_id = validate.item_id(str(record.get("item_id", "")))
    except validate.Invalid as err:
        return Rejection(ITEM, err.reason.value, origin, err.detail, json.dumps(record)[:500])
    title = item_text.clean(str(record.get("title") or ""))
    categories = tuple(c for c in (item_text.clean(str(x)) for x in record.get("categories") or ()) if c)
    text = item_text.compose_item_text(title=title, description=str(record.get("description") or ""),
                                       categories=categories)
    return Item(item_id, title or item_id, text, categories, origin)


class FirstOfEachEvent(beam.PTransform):
    """(event id, Interaction) → each event id's first Interaction (by log file and line); the rest
    are rejected as ``duplicate_event``. Grouped in files under ``scratch`` (beam/spill.py)."""

    def __init__(self, scratch: str):
        super().__init__()
        self._scratch = scratch

    def expand(self, keyed):
        def first(grouped):
            event_id, group = grouped
            ordered = sorted(group, key=lambda r: origin_key(r.origin))
            yield ordered[0]
            for dup in ordered[1:]:
                yield beam.pvalue.TaggedOutput(records.REJECTED, Rejection(
                    INTERACTION, Reject.DUPLICATE_EVENT.value,
                    dup.origin, f"event {event_id} first logged at {ordered[0].origin}", repr(tuple(dup)[:-1])))

        return keyed | "ById" >> GroupByKeyOnDisk(self._scratch) | "First" >> beam.FlatMap(first).with_outputs(
            records.REJECTED, main="unique")


def _decoded_interactions(record: bytes, origin_prefix: str):
    e = example_codec.decode((contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP, contract.RATING), record)
    return Interaction(e["user_id"], e["item_id"], e["timestamp"], e["rating"],
                       f"{origin_prefix}:{e['user_id']}:{e['item_id']}:{e['timestamp']}")


class EventLogSource(beam.PTransform):
    """The log's events joined to a previous data folder (see the module's docstring); ``scratch``:
    a folder for its working files, which the caller removes when the pipeline is done."""

    def __init__(self, log_dir: str, catalog: str, scratch: str):
        super().__init__()
        if not log_dir or not catalog:
            from tworec.errors import UserError

            raise UserError("--dataset events needs --input LOG_DIR (the gateway's event log) and --catalog DATA_DIR "
                            "(the data folder the served model was trained on)")
        self._log_dir, self._catalog, self._scratch = log_dir, catalog, scratch

    def expand(self, pbegin):
        base = DataLayout(self._catalog)
        lines = pbegin | "ReadLog" >> ReadLines(segment_pattern(self._log_dir))
        parsed = lines | "ParseLog" >> beam.ParDo(ParseLogLine()).with_outputs(
            INTERACTION, ITEM, IMPRESSION, CHANGE, records.REJECTED)
        logged = parsed[INTERACTION] | "OneEach" >> FirstOfEachEvent(self._scratch)
        upserts = parsed[ITEM] | "UpsertKinds" >> beam.Partition(lambda r, _: 0 if isinstance(r, Item) else 1, 2)
        log_start = beam.pvalue.AsSingleton(
            logged["unique"] | "Times" >> beam.Map(lambda i: i.timestamp)
            | "First" >> beam.CombineGlobally(lambda times: min(times, default=contract.MAX_TIMESTAMP)))
        base_interactions = (
            [pbegin | f"Read_{s.value}" >> beam.io.ReadFromTFRecord(base.split_pattern(s))
             | f"Decode_{s.value}" >> beam.Map(_decoded_interactions, f"base-{s.value}")
             for s in contract.TEMPORAL_SPLITS]
            | "AllBase" >> beam.Flatten()
            | "BeforeLog" >> beam.Partition(lambda i, _, start: int(i.timestamp >= start), 2, log_start))
        interactions = (base_interactions[0], logged["unique"]) | "AllInteractions" >> beam.Flatten()
        base_items = (pbegin | "ReadItems" >> beam.io.ReadFromTFRecord(base.items_pattern)
                      | "DecodeItems" >> beam.Map(_base_item))
        merged = ((base_items, upserts[0]) | "AllItems" >> beam.Flatten()
                  | "ById" >> beam.Map(lambda i: (i.item_id, i)) | "Group" >> beam.GroupByKey()
                  | "Latest" >> beam.FlatMap(_latest_definition).with_outputs("replaced", main="items"))
        items = merged["items"]
        users = (pbegin | "ReadUsers" >> beam.io.ReadFromTFRecord(base.users_pattern)
                 | "DecodeUsers" >> beam.Map(_base_user))
        count = lambda label, pcoll, kind: (pcoll | f"Count{label}" >> beam.combiners.Count.Globally()  # noqa: E731
                                            | f"Key{label}" >> beam.Map(lambda n, k=kind: (k, n)))
        read = [count("Interactions", interactions, INTERACTION),
                count("LogRejected", parsed[records.REJECTED] | "RejectedKinds" >> beam.Map(lambda r: r.kind)
                      | "OnlyInteractions" >> beam.Filter(lambda k: k == INTERACTION), INTERACTION),
                count("Duplicates", logged[records.REJECTED], INTERACTION),
                count("Items", items, ITEM), count("BadItems", upserts[1], ITEM),
                count("Updates", merged["replaced"], "item_update"),
                count("Superseded", base_interactions[1], "superseded_by_log"),
                count("Users", users, "user"),
                count("Impressions", parsed[IMPRESSION], IMPRESSION), count("Changes", parsed[CHANGE], CHANGE)]
        rejected = (parsed[records.REJECTED], logged[records.REJECTED], upserts[1])
        return assemble(pbegin, interactions, items, users, rejected, read)


def _latest_definition(grouped):
    """An item's definitions → the latest (the log's last upsert, else the base catalog's)."""
    _, definitions = grouped
    ordered = sorted(definitions, key=lambda i: (not i.origin.startswith("base-"), origin_key(i.origin)))
    yield ordered[-1]
    for _ in ordered[:-1]:
        yield beam.pvalue.TaggedOutput("replaced", 1)


def _base_item(record: bytes) -> Item:
    r = example_codec.decode(contract.ITEM_FEATURES, record)
    return Item(r["item_id"], r["item_title"], r["item_text"], tuple(r["item_categories"]), f"base-items:{r['item_id']}")


def _base_user(record: bytes) -> User:
    r = example_codec.decode(contract.USER_FEATURES, record)
    return User(r["user_id"], tuple(r["user_attributes"]), f"base-users:{r['user_id']}")
