"""The data job's outputs, one composite transform per job (paths from tworec.layout.DataLayout).

    WriteSplits          {"examples": {split: SplitBatches}, "sizes"} → TFRecords per split; → (split, summary)
    WriteCatalog         items, users → items/ and users/ TFRecords
    WriteDeadLetters     rejections → dead_letter/*.jsonl; → per (kind, reason): count, first row
    CountTrain           train SplitBatches, items → singletons of (id, count) pairs
    WriteVocabularies    those counts → vocab/{users,items,categories}.txt; → (name, size)
    WritePopularity      item counts → popularity.tsv
    WriteColdItems       the cold-item set → cold_items.txt
    WriteStats           every summary above → stats.json
"""
from __future__ import annotations

import os

import time
from dataclasses import asdict

import apache_beam as beam

from tworec import contract, example_codec
from tworec.beam.artifacts import SplitSummary, WriteFile, lines, popularity_quantiles, ranked, to_json
from tworec.beam.ordered_tfrecords import WriteOrderedTFRecords
from tworec.beam.sequences import item_counts as item_counts_of, origin_key
from tworec.beam.splits import MergeCounters
from tworec.contract import Split
from tworec.layout import DataLayout


class WriteSplits(beam.PTransform):
    """{"examples": {split name: PCollection[SplitBatch]}, "sizes": singleton {split name: expected
    examples}} → each split's TFRecords (a user's examples together, users in a stable order, the
    same on any runner); returns PCollection[(split name, summary dict)]. The sizes choose shard
    counts before the examples exist, so no runner has to hold a split to count it."""

    def __init__(self, layout: DataLayout, shards: int):
        super().__init__()
        self._layout, self._shards = layout, shards

    def expand(self, inputs):
        summaries = []
        for name, batches in inputs["examples"].items():
            expected = inputs["sizes"] | f"Size_{name}" >> beam.Map(lambda sizes, n=name: sizes[n])
            (batches
             | f"Records_{name}" >> beam.Map(lambda batch: (batch.user_id, batch.records))
             | f"Write_{name}" >> WriteOrderedTFRecords(
                 self._layout.split_prefix(name), self._shards, expected_records=expected))
            summaries.append(batches
                             | f"Summary_{name}" >> beam.CombineGlobally(SplitSummary())
                             | f"Name_{name}" >> beam.Map(lambda s, n=name: (n, s)))
        return tuple(summaries) | "AllSummaries" >> beam.Flatten()


def _item_record(item) -> bytes:
    return example_codec.encode(contract.ITEM_FEATURES, {
        "item_id": item.item_id, "item_title": item.title, "item_text": item.text,
        "item_categories": item.categories})


def _user_record(user) -> bytes:
    return example_codec.encode(contract.USER_FEATURES, {"user_id": user.user_id,
                                                         "user_attributes": user.attributes})


class WriteCatalog(beam.PTransform):
    """{"items": PCollection[Item], "users": PCollection[User]} → the items/ and users/ TFRecords
    (one file each, sorted by id: the same on any runner); returns {"items", "users"}: the paths."""

    def __init__(self, layout: DataLayout):
        super().__init__()
        self._layout = layout

    def expand(self, catalog):
        layout = self._layout
        return {
            "items": (catalog["items"]
                      | "EncodeItems" >> beam.Map(lambda i: (i.item_id, (_item_record(i),)))
                      | "WriteItems" >> WriteOrderedTFRecords(layout.items_prefix, 1)),
            "users": (catalog["users"]
                      | "EncodeUsers" >> beam.Map(lambda u: (u.user_id, (_user_record(u),)))
                      | "WriteUsers" >> WriteOrderedTFRecords(layout.users_prefix, 1)),
        }


class FirstAndRange(beam.CombineFn):
    """Rejections of one reason → {"count", "example" (the first by file and line), "values"
    ([min, max] of their parsed values, when they have any)}."""

    def create_accumulator(self):
        return [0, None, None, None]

    def add_input(self, acc, r):
        acc[0] += 1
        if acc[1] is None or origin_key(r.origin) < origin_key(acc[1].origin):
            acc[1] = r
        if r.value is not None:
            acc[2] = r.value if acc[2] is None else min(acc[2], r.value)
            acc[3] = r.value if acc[3] is None else max(acc[3], r.value)
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out[0] += a[0]
            if a[1] is not None and (out[1] is None or origin_key(a[1].origin) < origin_key(out[1].origin)):
                out[1] = a[1]
            for i, pick in ((2, min), (3, max)):
                if a[i] is not None:
                    out[i] = a[i] if out[i] is None else pick(out[i], a[i])
        return out

    def extract_output(self, acc):
        example = acc[1]._asdict() if acc[1] is not None else None
        return {"count": acc[0], "example": example,
                "values": [acc[2], acc[3]] if acc[2] is not None else None}


class WriteDeadLetters(beam.PTransform):
    """PCollection[Rejection] → dead_letter/*.jsonl; returns PCollection[((kind, reason), summary)]
    with the summary of ``FirstAndRange``."""

    def __init__(self, layout: DataLayout):
        super().__init__()
        self._layout = layout

    def expand(self, rejected):
        (rejected
         | "Json" >> beam.Map(lambda r: r.to_json())
         | "Write" >> beam.io.WriteToText(self._layout.dead_letter_prefix, file_name_suffix=".jsonl", num_shards=1))
        return (rejected
                | "ByReason" >> beam.Map(lambda r: ((r.kind, r.reason), r))
                | "Summarize" >> beam.CombinePerKey(FirstAndRange()))


class CountTrain(beam.PTransform):
    """{"train": PCollection[SplitBatch], "items": PCollection[Item]} → {"users", "items",
    "categories"}: singleton lists of (id, count), users and items by train interactions,
    categories by catalog items."""

    def expand(self, inputs):
        train, items = inputs["train"], inputs["items"]
        return {
            "items": (train
                      | "TrainItems" >> beam.Map(item_counts_of)
                      | "ItemCounts" >> beam.CombineGlobally(MergeCounters())
                      | "ItemCountList" >> beam.Map(lambda counts: list(counts.items()))),
            "users": (train
                      | "TrainUsers" >> beam.Map(lambda b: (b.user_id, len(b.records)))
                      | "UserCountList" >> beam.combiners.ToList()),
            "categories": (items
                           | "Categories" >> beam.FlatMap(lambda i: i.categories)
                           | "CategoryCounts" >> beam.combiners.Count.PerElement()
                           | "CategoryCountList" >> beam.combiners.ToList()),
        }


class WriteVocabularies(beam.PTransform):
    """{name: singleton list of (token, count)} → vocab/<name>.txt, most frequent first (ties by
    token); returns PCollection[(name, vocabulary size)]."""

    def __init__(self, layout: DataLayout):
        super().__init__()
        self._layout = layout

    def expand(self, counts):
        sizes = []
        for name, pcoll in counts.items():
            (pcoll
             | f"Text_{name}" >> beam.Map(lambda c: lines(t for t, _ in ranked(c)))
             | f"Write_{name}" >> WriteFile(self._layout.vocab(name)))
            sizes.append(pcoll | f"Size_{name}" >> beam.Map(lambda c, n=name: (n, len(c))))
        return tuple(sizes) | "AllSizes" >> beam.Flatten()


class WritePopularity(beam.PTransform):
    """Singleton list of (item, train count) → popularity.tsv, most popular first."""

    def __init__(self, layout: DataLayout):
        super().__init__()
        self._layout = layout

    def expand(self, item_counts):
        return (item_counts
                | "Text" >> beam.Map(lambda c: "".join(f"{t}\t{n}\n" for t, n in ranked(c)))
                | "Write" >> WriteFile(self._layout.popularity))


class WriteColdItems(beam.PTransform):
    """Singleton set of cold item ids → cold_items.txt, sorted."""

    def __init__(self, layout: DataLayout):
        super().__init__()
        self._layout = layout

    def expand(self, cold_items):
        return cold_items | "Text" >> beam.Map(lambda s: lines(sorted(s))) | "Write" >> WriteFile(self._layout.cold_items)


def assemble_stats(_, config, started, read, rejected, summaries, cutoffs, cold_items, item_counts,
                   catalog_items, catalog_users, vocab_sizes) -> str:
    """stats.json's text from the job's summaries (each a side input, named as in WriteStats)."""
    read = dict(read)
    rejected_by, examples = {}, {}
    for (kind, reason), summary in rejected:
        rejected_by.setdefault(kind, {})[reason] = summary["count"]
        examples.setdefault(kind, {})[reason] = {"example": summary["example"], "values": summary["values"]}
    splits = dict(summaries)
    for s in Split:
        splits.setdefault(s.value, {"examples": 0, "users": 0, "items": 0,
                                     "first_timestamp": None, "last_timestamp": None})
    temporal = sum(splits[s.value]["examples"] for s in contract.TEMPORAL_SPLITS)
    tfrs = sum(splits[s.value]["examples"] for s in contract.TFRS_SPLITS)

    def balance(kind, written):
        n_read = read.get(kind, 0)
        n_rejected = sum(rejected_by.get(kind, {}).values())
        return {"read": n_read, "written": written, "rejected": n_rejected,
                "balanced": n_read == written + n_rejected}

    return to_json({
        "dataset": config.dataset,
        "input": config.input if not config.input or "://" in config.input else os.path.abspath(config.input),
        "config": asdict(config),
        "read": read,
        "rejected": rejected_by,
        "rejected_examples": examples,
        "reconciliation": {
            "interactions": balance("interaction", temporal),
            "tfrs_protocol_covers_all": tfrs == temporal,
            "items": balance("item", catalog_items),
            "users": balance("user", catalog_users),
        },
        "splits": splits,
        "time_cutoffs": cutoffs,
        "catalog_items": catalog_items,
        "catalog_users": catalog_users,
        "cold_items": len(cold_items),
        "vocab_sizes": dict(vocab_sizes),
        "train_popularity": popularity_quantiles(item_counts),
        "seconds": round(time.time() - started, 1),
    })


# WriteStats' inputs: side inputs read as lists, and singletons.
_LIST_PARTS = ("read", "rejected", "summaries", "vocab_sizes")
_SINGLETON_PARTS = ("cutoffs", "cold_items", "item_counts", "catalog_items", "catalog_users")


class WriteStats(beam.PTransform):
    """{part: PCollection} → stats.json. Parts: read (kind, n), rejected ((kind, reason), summary),
    summaries (split, summary), vocab_sizes (name, n); singletons cutoffs, cold_items, item_counts,
    catalog_items and catalog_users (counts)."""

    def __init__(self, config, layout: DataLayout):
        super().__init__()
        self._config, self._layout = config, layout

    def expand(self, parts):
        sides = {name: beam.pvalue.AsList(parts[name]) for name in _LIST_PARTS}
        sides.update({name: beam.pvalue.AsSingleton(parts[name]) for name in _SINGLETON_PARTS})
        root = parts["read"].pipeline
        return (root
                | "Seed" >> beam.Create([None])
                | "Assemble" >> beam.Map(assemble_stats, self._config, time.time(), **sides)
                | "Write" >> WriteFile(self._layout.stats))
