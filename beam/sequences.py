"""Per-user work: each user's interactions, once grouped, become a clean time-ordered sequence
(unknown items and duplicates rejected) and then that user's examples in every split.

Work stays per user from the grouping on (a user's examples travel as one ``SplitBatch``), which
keeps Beam's per-element overhead off the millions of examples."""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import apache_beam as beam

from tworec import example_codec
from tworec.beam.records import REJECTED, Interaction, Rejection
from tworec.beam.splits import MergeCounters, SplitConfig, in_tfrs_train
from tworec.contract import Reject, Split


def origin_key(origin: str):
    """Sort key for "file:line" origins: by file, then numerically by line."""
    name, _, position = origin.rpartition(":")
    return (name, int(position)) if position.isdigit() else (origin, 0)


class Event(NamedTuple):
    """An interaction inside a user's sequence (the user id is the sequence's key)."""

    item_id: str
    timestamp: int
    rating: float
    origin: str


_SEPARATOR = "\x1f"  # ids are printable (contract.is_valid_id), so it never occurs in one


def keyed_by_user(r: Interaction):
    # One string per event crosses the shuffle: in-process runners hold a shuffle's whole input as
    # Python objects, and a string costs about a third of a tuple of four objects.
    return r.user_id, _SEPARATOR.join((r.item_id, str(r.timestamp), repr(float(r.rating)), r.origin))


def unpack_event(packed: str) -> "Event":
    """``keyed_by_user``'s value → the Event (the origin is last, so it may hold any text)."""
    item_id, timestamp, rating, origin = packed.split(_SEPARATOR, 3)
    return Event(item_id, int(timestamp), float(rating), origin)


class UserEvents(NamedTuple):
    """One user's clean interactions, oldest first, as columns: what every step after the grouping
    reads (columns of plain values pickle and unpickle without a Python call per event)."""

    user_id: str
    item_ids: tuple
    timestamps: tuple
    ratings: tuple


class SplitBatch(NamedTuple):
    """One user's examples in one split: serialized tf.train.Examples plus what stats need."""

    user_id: str
    records: tuple  # bytes, one per example
    item_ids: tuple  # the examples' target items, aligned with records
    first_timestamp: int
    last_timestamp: int


class DeduplicateById(beam.PTransform):
    """Keeps the first record (by file and line) of each id; the rest become dead letters."""

    def __init__(self, kind: str, reason: Reject):
        super().__init__()
        self._kind, self._reason = kind, reason

    def expand(self, records):
        kind, reason = self._kind, self._reason

        def first_of(keyed):
            key, group = keyed
            ordered = sorted(group, key=lambda r: origin_key(r.origin))
            yield ordered[0]
            for dup in ordered[1:]:
                yield beam.pvalue.TaggedOutput(REJECTED, Rejection(
                    kind, reason.value, dup.origin, f"{key} first seen at {ordered[0].origin}",
                    repr(tuple(dup)[:-1])))

        return (
            records
            | "ById" >> beam.Map(lambda r: (r[0], r))
            | "Group" >> beam.GroupByKey()
            | "First" >> beam.FlatMap(first_of).with_outputs(REJECTED, main="unique")
        )


class UserSequence(beam.DoFn):
    """(user, packed events) → ``UserEvents``, time-ordered. Interactions with items missing from
    the catalog are rejected (``unknown_item``), and so is the same (user, item, timestamp) again
    (``duplicate``; the first by file and line is kept)."""

    def process(self, keyed, catalog_ids):
        user, group = keyed
        events = sorted(map(unpack_event, group),
                        key=lambda e: (e.timestamp, e.item_id, origin_key(e.origin)))
        kept, last = [], None
        for e in events:
            if e.item_id not in catalog_ids:
                yield self._reject(user, e, Reject.UNKNOWN_ITEM,
                                   f"item {e.item_id} is not in the item catalog")
                continue
            key = (e.timestamp, e.item_id)
            if key == last:
                yield self._reject(user, e, Reject.DUPLICATE,
                                   f"same user, item and timestamp as {kept[-1].origin}")
                continue
            kept.append(e)
            last = key
        if kept:
            yield UserEvents(user, tuple(e.item_id for e in kept), tuple(e.timestamp for e in kept),
                             tuple(e.rating for e in kept))

    @staticmethod
    def _reject(user, e: Event, reason: Reject, detail: str):
        return beam.pvalue.TaggedOutput(REJECTED, Rejection(
            "interaction", reason.value, e.origin, detail,
            f"{user},{e.item_id},{e.timestamp},{e.rating}"))


class _History:
    """The items a split's examples may see, kept as encoded pieces for fast slicing."""

    def __init__(self, length: int):
        self._n = length
        self.ids: list = []
        self.times: list = []

    def add(self, id_piece: bytes, time_piece: bytes):
        self.ids.append(id_piece)
        self.times.append(time_piece)

    def snapshot(self):
        """Most recent first, at most ``length`` entries."""
        return self.ids[-self._n:][::-1], self.times[-self._n:][::-1]


def temporal_split(timestamp: int, cold: bool, cutoffs: dict) -> Split:
    """The temporal split of an interaction: by the time cutoffs; a held-out cold item's
    train-period interactions go to cold_train_period."""
    if timestamp >= cutoffs["test_start"]:
        return Split.TEST
    if timestamp >= cutoffs["valid_start"]:
        return Split.VALID
    return Split.COLD_TRAIN_PERIOD if cold else Split.TRAIN


class SplitSizes(beam.PTransform):
    """PCollection[UserEvents] → singleton {split name: examples it will get}: exact for the
    temporal splits, the expected share for the TFRS ones (sizes only choose shard counts, and
    counting those exactly would hash every interaction twice). With ``read``, each input element
    gives its sequences through it (e.g. a kept file → the sequences in it), read in the stage
    that waits on the cutoffs."""

    def __init__(self, config: SplitConfig, cutoffs, cold_items, read=None):
        super().__init__()
        self._config, self._cutoffs, self._cold = config, cutoffs, cold_items
        self._read = read or (lambda sequence: (sequence,))

    def expand(self, sequences):
        read = self._read

        def count(element, cutoffs, cold_items):
            return Counter(temporal_split(t, item in cold_items, cutoffs).value
                           for seq in read(element) for item, t in zip(seq.item_ids, seq.timestamps))

        def with_tfrs(counts, fraction):
            total = sum(counts.values())
            sizes = {s.value: counts.get(s.value, 0) for s in Split}
            sizes[Split.TFRS_TRAIN.value] = round(total * fraction)
            sizes[Split.TFRS_TEST.value] = total - sizes[Split.TFRS_TRAIN.value]
            return sizes

        return (sequences
                | "Count" >> beam.Map(count, beam.pvalue.AsSingleton(self._cutoffs),
                                      beam.pvalue.AsSingleton(self._cold))
                | "Sum" >> beam.CombineGlobally(MergeCounters())
                | "WithTfrs" >> beam.Map(with_tfrs, self._config.tfrs_train_fraction))


class BuildExamples(beam.DoFn):
    """``UserEvents`` → per split, one ``SplitBatch`` with that user's examples there.

    Every interaction gets one example in a temporal split (train / valid / test, by the time
    cutoffs; a held-out cold item's train-period interactions go to cold_train_period) and one in
    a TFRS split (seeded hash). Its history = the most recent ``history_length`` items the user
    had strictly before its timestamp (equal timestamps are not before), most recent first, from
    what its split may see: train never sees cold items; valid/test see everything before them
    (the user's real state at that moment); TFRS examples see only earlier TFRS-train ones.
    """

    def __init__(self, config: SplitConfig, history_length: int):
        self._config = config
        self._n = history_length

    def process(self, sequence: UserEvents, cutoffs, cold_items):
        user, item_ids, timestamps, ratings = sequence
        cfg = self._config
        encoder = example_codec.InteractionEncoder(user)
        seen_all, seen_warm, seen_tfrs = _History(self._n), _History(self._n), _History(self._n)
        out = {}  # split → (records, item ids, timestamps)
        i, n = 0, len(item_ids)
        while i < n:
            # All interactions at one timestamp share the same "strictly before" history.
            j = i
            while j < n and timestamps[j] == timestamps[i]:
                j += 1
            snapshots = (seen_all.snapshot(), seen_warm.snapshot(), seen_tfrs.snapshot())
            pieces = []
            for k in range(i, j):
                item, timestamp = item_ids[k], timestamps[k]
                cold = item in cold_items
                tfrs_train = in_tfrs_train(cfg.seed, user, item, timestamp, cfg.tfrs_train_fraction)
                split = temporal_split(timestamp, cold, cutoffs)
                history = snapshots[1] if split is Split.TRAIN else snapshots[0]
                tfrs_split = Split.TFRS_TRAIN if tfrs_train else Split.TFRS_TEST
                for s, h in ((split, history), (tfrs_split, snapshots[2])):
                    records, items, times = out.setdefault(s, ([], [], []))
                    records.append(encoder.encode(item, timestamp, ratings[k], h[0], h[1]))
                    items.append(item)
                    times.append(timestamp)
                pieces.append((item, timestamp, cold, tfrs_train))
            for item, timestamp, cold, tfrs_train in pieces:
                piece = (example_codec.string_piece(item), example_codec.int_piece(timestamp))
                seen_all.add(*piece)
                if not cold:
                    seen_warm.add(*piece)
                if tfrs_train:
                    seen_tfrs.add(*piece)
            i = j
        for split, (records, items, times) in out.items():
            yield beam.pvalue.TaggedOutput(split.value, SplitBatch(
                user, tuple(records), tuple(items), min(times), max(times)))


def item_counts(batch: SplitBatch) -> Counter:
    return Counter(batch.item_ids)
