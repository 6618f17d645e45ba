"""The data job: a source → validated, de-duplicated, time-split TFRecords plus artifacts.

    BuildDataset   root → {"examples": {split: PCollection[SplitBatch]}, "split_sizes", "items",
                           "users", "rejected", "read", "cutoffs", "cold_items"}
    WriteDataset   that dict → TFRecords (gzip, sharded and ordered by user: the same on any
                   runner, see beam/ordered_tfrecords.py), dead letters, vocab/, popularity.tsv,
                   cold_items.txt, stats.json   (paths from tworec.layout.DataLayout)
    run()          both, on any Beam runner chosen by standard pipeline options
"""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions, PipelineOptions, StandardOptions, WorkerOptions,
)

from tworec.beam import records
from tworec.beam.config import DataConfig
from tworec.beam.sequences import (
    BuildExamples, DeduplicateById, SplitSizes, UserSequence, keyed_by_user,
)
from tworec.beam.sources import get_source
from tworec.beam.spill import ForEachKept, GroupByKeyOnDisk, KeepOnDisk, read_kept, remove_folder
from tworec.beam.summary import check_rejections
from tworec.beam.splits import TimeCutoffs, UnionSets, select_cold_items
from tworec.beam.writers import (
    CountTrain, WriteCatalog, WriteColdItems, WriteDeadLetters, WritePopularity, WriteSplits, WriteStats,
    WriteVocabularies,
)
from tworec.contract import Reject, Split
from tworec.layout import DataLayout


def source_of(config: DataConfig, scratch: str) -> beam.PTransform:
    """The source transform that reads ``config.dataset`` (``scratch``: a folder for its working files)."""
    cls = get_source(config.dataset)
    if config.dataset == "synthetic":
        return cls(config.synthetic)
    if config.dataset == "csv":
        return cls(config.input, config.rating_range)
    if config.dataset == "events":
        return cls(config.input, config.catalog, FileSystems.join(scratch, "events"))
    return cls(config.input)


def _timestamps_in(path: str):
    return (sequence.timestamps for sequence in read_kept(path))


class BuildDataset(beam.PTransform):
    """The source's records → validated, de-duplicated, time-split examples (see the module's
    docstring for the outputs). The interactions are grouped by user, and the users' sequences
    kept, in files under ``scratch`` (beam/spill.py), so memory does not grow with the number of
    interactions; the caller removes ``scratch`` when the pipeline is done."""

    def __init__(self, config: DataConfig, scratch: str):
        super().__init__()
        self._config, self._scratch = config, scratch

    def expand(self, pbegin):
        cfg = self._config
        raw = pbegin | "Source" >> source_of(cfg, self._scratch)

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
            | "GroupByUser" >> GroupByKeyOnDisk(FileSystems.join(self._scratch, "users"))
            | "Sequence" >> beam.ParDo(UserSequence(), beam.pvalue.AsSingleton(catalog_ids))
            .with_outputs(records.REJECTED, main="seq")
        )
        # Each step that needs the sequences reads these files itself, in its own stage: a stage
        # waiting on the cutoffs would otherwise make an in-process runner hold them all.
        kept = sequences["seq"] | "KeepSequences" >> KeepOnDisk(FileSystems.join(self._scratch, "sequences"))
        cutoffs = kept | "Cutoffs" >> TimeCutoffs(cfg.split, read=_timestamps_in)
        cold_items = (
            sequences["seq"]
            | "ItemsWithInteractions" >> beam.Map(lambda sequence: set(sequence.item_ids))
            | "AllItems" >> beam.CombineGlobally(UnionSets())
            | "PickCold" >> beam.Map(select_cold_items, cfg.split)
        )
        split_sizes = kept | "SplitSizes" >> SplitSizes(cfg.split, cutoffs, cold_items, read=read_kept)
        split_names = [s.value for s in Split]
        examples = kept | "Examples" >> beam.ParDo(
            ForEachKept(BuildExamples(cfg.split, cfg.history_length)),
            beam.pvalue.AsSingleton(cutoffs),
            beam.pvalue.AsSingleton(cold_items),
        ).with_outputs(*split_names)
        rejected = (
            raw["rejected"], items[records.REJECTED], users[records.REJECTED],
            sequences[records.REJECTED],
        ) | "AllRejected" >> beam.Flatten()
        return {
            "examples": {name: examples[name] for name in split_names},  # PCollection[SplitBatch]
            "split_sizes": split_sizes,  # singleton {split: expected examples}
            "items": items["unique"],
            "users": users["unique"],
            "rejected": rejected,
            "read": raw["read"],
            "cutoffs": cutoffs,
            "cold_items": cold_items,
        }


class WriteDataset(beam.PTransform):
    """BuildDataset's outputs → the data folder, each output by its own writer (beam/writers.py)."""

    def __init__(self, config: DataConfig, layout: DataLayout):
        super().__init__()
        self._config, self._layout = config, layout

    def expand(self, built):
        layout = self._layout
        train = built["examples"][Split.TRAIN.value]
        summaries = ({"examples": built["examples"], "sizes": built["split_sizes"]}
                     | "Splits" >> WriteSplits(layout, self._config.shards))
        _ = {"items": built["items"], "users": built["users"]} | "Catalog" >> WriteCatalog(layout)
        rejected = built["rejected"] | "DeadLetters" >> WriteDeadLetters(layout)
        counts = {"train": train, "items": built["items"]} | "CountTrain" >> CountTrain()
        vocab_sizes = counts | "Vocabularies" >> WriteVocabularies(layout)
        _ = counts["items"] | "Popularity" >> WritePopularity(layout)
        _ = built["cold_items"] | "ColdItems" >> WriteColdItems(layout)
        return {
            "read": built["read"] | "ReadTotals" >> beam.CombinePerKey(sum),
            "rejected": rejected,
            "summaries": summaries,
            "vocab_sizes": vocab_sizes,
            "cutoffs": built["cutoffs"],
            "cold_items": built["cold_items"],
            "item_counts": counts["items"],
            "catalog_items": built["items"] | "CountItems" >> beam.combiners.Count.Globally(),
            "catalog_users": built["users"] | "CountUsers" >> beam.combiners.Count.Globally(),
        } | "Stats" >> WriteStats(self._config, layout)


# With no runner named: Beam's in-process portable runner, which the DirectRunner would fall back
# to anyway after trying to download and start the Prism runner (so the job never depends on a
# download, and runs on the runner the tests run on).
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def pipeline_options(pipeline_args) -> PipelineOptions:
    """Standard Beam options; with no runner named, LOCAL_RUNNER with a worker process per core."""
    options = PipelineOptions(pipeline_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
        direct = options.view_as(DirectOptions)
        if not any(a.startswith("--direct_running_mode") for a in pipeline_args):
            direct.direct_running_mode = "multi_processing"
        if not any(a.startswith("--direct_num_workers") for a in pipeline_args):
            direct.direct_num_workers = 0  # one worker per core
    if not any(a.startswith("--default_sdk_harness_log_level") for a in pipeline_args):
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "ERROR"
    return options


def run(config: DataConfig, out: str, pipeline_args=()) -> dict:
    """Runs the job on the runner the Beam options name and returns its stats.json. Raises
    ``TooManyRejected`` (after writing everything, dead letters included) when it rejected more
    than ``config.max_rejected_share`` of the interactions, items or users it read; the message
    gives the top reasons, an example row of each and the flag that would fix it."""
    layout = DataLayout(out)
    remove_folder(layout.scratch)  # a failed run's leftovers
    with beam.Pipeline(options=pipeline_options(list(pipeline_args))) as p:
        _ = p | "Build" >> BuildDataset(config, layout.scratch) | "Write" >> WriteDataset(config, layout)
    remove_folder(layout.scratch)
    with FileSystems.open(layout.stats) as handle:
        stats = json.loads(handle.read())
    check_rejections(stats, config, layout)
    return stats
