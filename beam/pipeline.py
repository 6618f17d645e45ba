"""The data job: a source → validated, de-duplicated, time-split TFRecords plus artifacts.

    BuildDataset   root → {"examples": {split: PCollection[Example]}, "items", "users",
                           "rejected", "read", "cutoffs", "cold_items"}
    WriteDataset   that dict → TFRecords (gzip, sharded and ordered by user: the same on any
                   runner, see beam/ordered_tfrecords.py), dead letters, vocab/, popularity.tsv,
                   cold_items.txt, stats.json   (paths from tworec.layout.DataLayout)
    run()          both, on any Beam runner chosen by standard pipeline options
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions, PipelineOptions, StandardOptions, WorkerOptions,
)

from tworec import contract, example_codec
from tworec.beam import records
from tworec.beam.artifacts import (
    SplitSummary, WriteFile, lines, popularity_quantiles, ranked, to_json,
)
from tworec.beam.ordered_tfrecords import WriteOrderedTFRecords
from tworec.beam.sequences import (
    BuildExamples, DeduplicateById, UserSequence, item_counts as item_counts_of, items_of,
    keyed_by_user, timestamps_of,
)
from tworec.beam.sources import get_source
from tworec.beam.sources.synthetic import SyntheticConfig
from tworec.beam.splits import (
    MergeCounters, SplitConfig, TimeCutoffs, UnionSets, select_cold_items,
)
from tworec.beam.validate import RatingRange
from tworec.contract import Reject, Split
from tworec.layout import DataLayout


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    input: str | None = None  # folder of the raw files (movielens/amazon have defaults)
    history_length: int = contract.HISTORY_LENGTH
    shards: int = 0  # TFRecord files per split; 0: one per 200k examples (beam/ordered_tfrecords.py)
    split: SplitConfig = field(default_factory=SplitConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    csv_ratings: RatingRange = field(default_factory=RatingRange)

    def source(self) -> beam.PTransform:
        cls = get_source(self.dataset)
        if self.dataset == "synthetic":
            return cls(self.synthetic)
        if self.dataset == "csv":
            return cls(self.input, self.csv_ratings)
        return cls(self.input)


class BuildDataset(beam.PTransform):
    def __init__(self, config: DataConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        cfg = self._config
        raw = pbegin | "Source" >> cfg.source()

        items = raw["items"] | "UniqueItems" >> DeduplicateById("item", Reject.DUPLICATE_ITEM)
        users = raw["users"] | "UniqueUsers" >> DeduplicateById("user", Reject.DUPLICATE_USER)
        catalog_ids = (
            items["unique"]
            | "CatalogIds" >> beam.Map(lambda item: item.item_id)
            | "CatalogList" >> beam.combiners.ToList()
            | "CatalogSet" >> beam.Map(frozenset)
        )
        sequences = (
            raw["interactions"]
            | "ByUser" >> beam.Map(keyed_by_user)
            | "GroupByUser" >> beam.GroupByKey()
            | "Sequence" >> beam.ParDo(UserSequence(), beam.pvalue.AsSingleton(catalog_ids))
            .with_outputs(records.REJECTED, main="seq")
        )
        clean = sequences["seq"]
        cutoffs = (
            clean
            | "Timestamps" >> beam.Map(timestamps_of)
            | "Cutoffs" >> TimeCutoffs(cfg.split)
        )
        cold_items = (
            clean
            | "ItemsWithInteractions" >> beam.Map(items_of)
            | "AllItems" >> beam.CombineGlobally(UnionSets())
            | "PickCold" >> beam.Map(select_cold_items, cfg.split)
        )
        split_names = [s.value for s in Split]
        examples = clean | "Examples" >> beam.ParDo(
            BuildExamples(cfg.split, cfg.history_length),
            beam.pvalue.AsSingleton(cutoffs),
            beam.pvalue.AsSingleton(cold_items),
        ).with_outputs(*split_names)
        rejected = (
            raw["rejected"], items[records.REJECTED], users[records.REJECTED],
            sequences[records.REJECTED],
        ) | "AllRejected" >> beam.Flatten()
        return {
            "examples": {name: examples[name] for name in split_names},  # PCollection[SplitBatch]
            "items": items["unique"],
            "users": users["unique"],
            "rejected": rejected,
            "read": raw["read"],
            "cutoffs": cutoffs,
            "cold_items": cold_items,
        }


def _assemble_stats(_, config, read, rejected, summaries, cutoffs, cold_items, item_counts,
                    catalog, users, vocab_sizes, started):
    read = dict(read)
    rejected_by = {}
    for (kind, reason), n in rejected:
        rejected_by.setdefault(kind, {})[reason] = n
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
        "input": config.input,
        "config": asdict(config),
        "read": read,
        "rejected": rejected_by,
        "reconciliation": {
            "interactions": balance("interaction", temporal),
            "tfrs_protocol_covers_all": tfrs == temporal,
            "items": balance("item", catalog),
            "users": balance("user", users),
        },
        "splits": splits,
        "time_cutoffs": cutoffs,
        "catalog_items": catalog,
        "catalog_users": users,
        "cold_items": len(cold_items),
        "vocab_sizes": dict(vocab_sizes),
        "train_popularity": popularity_quantiles(item_counts),
        "seconds": round(time.time() - started, 1),
    })


class WriteDataset(beam.PTransform):
    def __init__(self, config: DataConfig, layout: DataLayout):
        super().__init__()
        self._config, self._layout = config, layout

    def expand(self, built):
        cfg, layout = self._config, self._layout
        started = time.time()
        side = beam.pvalue
        summaries = []
        for name, pcoll in built["examples"].items():
            (pcoll
             | f"Records_{name}" >> beam.FlatMap(
                 lambda batch: (((batch.user_id, i), r) for i, r in enumerate(batch.records)))
             | f"Write_{name}" >> WriteOrderedTFRecords(layout.split_prefix(name), cfg.shards))
            summaries.append(pcoll
                             | f"Summary_{name}" >> beam.CombineGlobally(SplitSummary())
                             | f"Name_{name}" >> beam.Map(lambda s, n=name: (n, s)))

        (built["items"]
         | "EncodeItems" >> beam.Map(lambda i: example_codec.encode(contract.ITEM_FEATURES, {
             "item_id": i.item_id, "item_title": i.title, "item_text": i.text,
             "item_categories": i.categories}))
         | "WriteItems" >> beam.io.WriteToTFRecord(
             layout.items_prefix, file_name_suffix=".tfrecord.gz", num_shards=1))
        (built["users"]
         | "EncodeUsers" >> beam.Map(lambda u: example_codec.encode(contract.USER_FEATURES, {
             "user_id": u.user_id, "user_attributes": u.attributes}))
         | "WriteUsers" >> beam.io.WriteToTFRecord(
             layout.users_prefix, file_name_suffix=".tfrecord.gz", num_shards=1))
        (built["rejected"]
         | "DeadLetterJson" >> beam.Map(lambda r: r.to_json())
         | "WriteDeadLetters" >> beam.io.WriteToText(
             layout.dead_letter_prefix, file_name_suffix=".jsonl", num_shards=1))

        train = built["examples"][Split.TRAIN.value]
        item_counts = (train | "TrainItems" >> beam.Map(item_counts_of)
                       | "ItemCounts" >> beam.CombineGlobally(MergeCounters())
                       | "ItemCountList" >> beam.Map(lambda counts: list(counts.items())))
        user_counts = (train | "TrainUsers" >> beam.Map(lambda b: (b.user_id, len(b.records)))
                       | "UserCountList" >> beam.combiners.ToList())
        category_counts = (built["items"]
                           | "Categories" >> beam.FlatMap(lambda i: i.categories)
                           | "CategoryCounts" >> beam.combiners.Count.PerElement()
                           | "CategoryCountList" >> beam.combiners.ToList())
        vocab_sizes = []
        for name, counts in (("users", user_counts), ("items", item_counts),
                             ("categories", category_counts)):
            (counts | f"VocabText_{name}" >> beam.Map(lambda c: lines(t for t, _ in ranked(c)))
             | f"WriteVocab_{name}" >> WriteFile(layout.vocab(name)))
            vocab_sizes.append(counts | f"VocabSize_{name}" >> beam.Map(lambda c, n=name: (n, len(c))))
        (item_counts
         | "PopularityText" >> beam.Map(lambda c: "".join(f"{t}\t{n}\n" for t, n in ranked(c)))
         | "WritePopularity" >> WriteFile(layout.popularity))
        (built["cold_items"] | "ColdText" >> beam.Map(lambda s: lines(sorted(s)))
         | "WriteCold" >> WriteFile(layout.cold_items))

        rejected_counts = (built["rejected"]
                           | "RejectKey" >> beam.Map(lambda r: (r.kind, r.reason))
                           | "RejectCounts" >> beam.combiners.Count.PerElement())
        read_totals = built["read"] | "ReadTotals" >> beam.CombinePerKey(sum)
        count = lambda label, pc: pc | label >> beam.combiners.Count.Globally()  # noqa: E731
        root = train.pipeline
        return (
            root
            | "StatsSeed" >> beam.Create([None])
            | "Stats" >> beam.Map(
                _assemble_stats, cfg,
                side.AsList(read_totals), side.AsList(rejected_counts),
                side.AsList(summaries | "AllSummaries" >> beam.Flatten()),
                side.AsSingleton(built["cutoffs"]), side.AsSingleton(built["cold_items"]),
                side.AsSingleton(item_counts),
                side.AsSingleton(count("CountItems", built["items"])),
                side.AsSingleton(count("CountUsers", built["users"])),
                side.AsList(vocab_sizes | "AllVocabSizes" >> beam.Flatten()),
                started)
            | "WriteStats" >> WriteFile(layout.stats)
        )


def pipeline_options(pipeline_args) -> PipelineOptions:
    """Standard Beam options; with no runner named, DirectRunner on every local core."""
    options = PipelineOptions(pipeline_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
        direct = options.view_as(DirectOptions)
        if not any(a.startswith("--direct_running_mode") for a in pipeline_args):
            direct.direct_running_mode = "multi_processing"
        if not any(a.startswith("--direct_num_workers") for a in pipeline_args):
            direct.direct_num_workers = 0  # one worker per core
    if not any(a.startswith("--default_sdk_harness_log_level") for a in pipeline_args):
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "ERROR"
    return options


def run(config: DataConfig, out: str, pipeline_args=()) -> DataLayout:
    layout = DataLayout(out)
    with beam.Pipeline(options=pipeline_options(list(pipeline_args))) as p:
        _ = p | "Build" >> BuildDataset(config) | "Write" >> WriteDataset(config, layout)
    return layout
