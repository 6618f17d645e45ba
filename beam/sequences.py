"""Per-key work: de-duplication, per-user time-ordered sequences, and the examples built from them
(split assignment plus the no-leakage history)."""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from tworec.beam.records import REJECTED, Interaction, Rejection
from tworec.beam.splits import SplitConfig, in_tfrs_train
from tworec.contract import Reject, Split


def origin_key(origin: str):
    """Sort key for "file:line" origins: by file, then numerically by line."""
    name, _, position = origin.rpartition(":")
    return (name, int(position)) if position.isdigit() else (origin, 0)


class Example(NamedTuple):
    """One interaction example as written to a split (see tworec.contract.INTERACTION_FEATURES)."""

    user_id: str
    item_id: str
    timestamp: int
    rating: float
    history_item_ids: tuple
    history_timestamps: tuple

    def as_features(self) -> dict:
        return self._asdict()


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


def user_sequence(keyed):
    """(user, interactions) → (user, time-ordered interactions without duplicates).

    A duplicate is the same (user, item, timestamp) again; the first by file and line is kept."""
    user, group = keyed
    ordered = sorted(group, key=lambda r: (r.timestamp, r.item_id, origin_key(r.origin)))
    kept, last = [], None
    for r in ordered:
        key = (r.timestamp, r.item_id)
        if key == last:
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(
                "interaction", Reject.DUPLICATE.value, r.origin,
                f"same user, item and timestamp as {kept[-1].origin}",
                f"{r.user_id},{r.item_id},{r.timestamp},{r.rating}"))
            continue
        kept.append(r)
        last = key
    yield user, tuple(kept)


class BuildExamples(beam.DoFn):
    """(user, ordered interactions) → one example per interaction in a temporal split and one in a
    TFRS split, each tagged with its split name.

    History = the most recent ``history_length`` items the user had strictly before the example's
    timestamp (equal timestamps are not before), most recent first, from interactions the example's
    split may see: train examples never see cold items; valid/test see everything before them (the
    user's real state at that moment); TFRS examples see only earlier TFRS-train interactions.
    """

    def __init__(self, config: SplitConfig, history_length: int):
        self._config = config
        self._n = history_length

    def _history(self, past: list):
        recent = past[-self._n:][::-1]
        return tuple(i for i, _ in recent), tuple(t for _, t in recent)

    def process(self, keyed, cutoffs, cold_items):
        user, sequence = keyed
        valid_start, test_start = cutoffs["valid_start"], cutoffs["test_start"]
        cfg = self._config
        seen_all, seen_warm, seen_tfrs = [], [], []
        i = 0
        while i < len(sequence):
            # All interactions at one timestamp share the same "strictly before" history.
            j = i
            while j < len(sequence) and sequence[j].timestamp == sequence[i].timestamp:
                j += 1
            group = sequence[i:j]
            all_hist, warm_hist, tfrs_hist = (
                self._history(seen_all), self._history(seen_warm), self._history(seen_tfrs))
            for r in group:
                cold = r.item_id in cold_items
                if r.timestamp >= test_start:
                    split, hist = Split.TEST, all_hist
                elif r.timestamp >= valid_start:
                    split, hist = Split.VALID, all_hist
                elif cold:
                    split, hist = Split.COLD_TRAIN_PERIOD, all_hist
                else:
                    split, hist = Split.TRAIN, warm_hist
                yield beam.pvalue.TaggedOutput(split.value, self._example(r, hist))
                tfrs_train = in_tfrs_train(cfg.seed, user, r.item_id, r.timestamp,
                                           cfg.tfrs_train_fraction)
                tfrs_split = Split.TFRS_TRAIN if tfrs_train else Split.TFRS_TEST
                yield beam.pvalue.TaggedOutput(tfrs_split.value, self._example(r, tfrs_hist))
            for r in group:
                seen_all.append((r.item_id, r.timestamp))
                if r.item_id not in cold_items:
                    seen_warm.append((r.item_id, r.timestamp))
                if in_tfrs_train(cfg.seed, user, r.item_id, r.timestamp, cfg.tfrs_train_fraction):
                    seen_tfrs.append((r.item_id, r.timestamp))
            i = j

    @staticmethod
    def _example(r: Interaction, history) -> Example:
        return Example(r.user_id, r.item_id, r.timestamp, r.rating, history[0], history[1])
