"""The data job's writers, each composite transform on its own: what it writes and what it returns."""
import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import test_pipeline
from tworec import contract, example_codec
from tworec.beam.config import DataConfig, RatingRange
from tworec.beam.records import Item, Rejection, User
from tworec.beam.sequences import SplitBatch
from tworec.beam.summary import TooManyRejected, check_rejections, rejection_problem
from tworec.beam.writers import (
    CountTrain, WriteCatalog, WriteColdItems, WriteDeadLetters, WritePopularity, WriteSplits, WriteStats,
    WriteVocabularies,
)
from tworec.layout import DataLayout
from tworec.tfrecord_io import read_records


def _batch(user, items, first=100):
    records = tuple(example_codec.encode(contract.INTERACTION_FEATURES, {
        "user_id": user, "item_id": item, "timestamp": first + i, "rating": 1.0, "history_item_ids": [],
        "history_timestamps": []}) for i, item in enumerate(items))
    return SplitBatch(user, records, tuple(items), first, first + len(items) - 1)


def test_write_splits_writes_each_split_and_summarizes_it(tmp_path):
    layout = DataLayout(str(tmp_path))
    with test_pipeline() as p:
        examples = {"train": p | "Train" >> beam.Create([_batch("u1", ["a", "b"]), _batch("u2", ["a"])]),
                    "test": p | "Test" >> beam.Create([_batch("u1", ["c"], first=500)])}
        sizes = p | "Sizes" >> beam.Create([{"train": 3, "test": 1}])
        summaries = {"examples": examples, "sizes": sizes} | WriteSplits(layout, shards=2)
        assert_that(summaries, equal_to([
            ("train", {"examples": 3, "users": 2, "items": 2, "first_timestamp": 100, "last_timestamp": 101}),
            ("test", {"examples": 1, "users": 1, "items": 1, "first_timestamp": 500, "last_timestamp": 500})]))
    train = [example_codec.decode(contract.INTERACTION_FEATURES, r) for r in read_records(layout.split_pattern("train"))]
    assert sorted((r["user_id"], r["item_id"]) for r in train) == [("u1", "a"), ("u1", "b"), ("u2", "a")]
    assert len(list(Path(layout.split_dir("train")).glob("part-*"))) == 2
    assert sorted(p.name for p in Path(layout.split_dir("test")).iterdir()) == [
        "part-00000-of-00002.tfrecord.gz", "part-00001-of-00002.tfrecord.gz"]  # no spill files left


def test_write_catalog_writes_items_and_users_sorted_by_id(tmp_path):
    layout = DataLayout(str(tmp_path))
    items = [Item("i2", "Two", "Two.", ("Art",), "f:2"), Item("i1", "One", "One.", (), "f:1")]
    with test_pipeline() as p:
        _ = {"items": p | "Items" >> beam.Create(items),
             "users": p | "Users" >> beam.Create([User("u1", ("age:30",), "g:1")])} | WriteCatalog(layout)
    decoded = [example_codec.decode(contract.ITEM_FEATURES, r) for r in read_records(layout.items_pattern)]
    assert [r["item_id"] for r in decoded] == ["i1", "i2"] and decoded[1]["item_categories"] == ["Art"]
    users = [example_codec.decode(contract.USER_FEATURES, r) for r in read_records(layout.users_pattern)]
    assert users == [{"user_id": "u1", "user_attributes": ["age:30"]}]


def test_write_dead_letters_keeps_every_row_and_the_first_of_each_reason(tmp_path):
    layout = DataLayout(str(tmp_path))
    rejected = [Rejection("interaction", "rating_out_of_range", "r.csv:9", "rating 9", "u,i,1,9", 9.0),
                Rejection("interaction", "rating_out_of_range", "r.csv:3", "rating 7", "u,i,1,7", 7.0),
                Rejection("item", "missing_text", "i.csv:2", "no text", "i,,")]
    with test_pipeline() as p:
        summary = p | beam.Create(rejected) | WriteDeadLetters(layout)
        assert_that(summary | beam.Map(lambda kv: (kv[0], kv[1]["count"], kv[1]["example"]["origin"], kv[1]["values"])),
                    equal_to([(("interaction", "rating_out_of_range"), 2, "r.csv:3", [7.0, 9.0]),
                              (("item", "missing_text"), 1, "i.csv:2", None)]))
    lines = [json.loads(x) for f in Path(tmp_path, "dead_letter").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(x["origin"] for x in lines) == ["i.csv:2", "r.csv:3", "r.csv:9"]


def test_count_train_counts_items_users_and_categories():
    items = [Item("a", "A", "A.", ("Art", "Space"), "f:1"), Item("b", "B", "B.", ("Art",), "f:2")]
    with test_pipeline() as p:
        counts = {"train": p | "Train" >> beam.Create([_batch("u1", ["a", "b", "a"]), _batch("u2", ["a"])]),
                  "items": p | "Items" >> beam.Create(items)} | CountTrain()
        assert_that(counts["items"] | "I" >> beam.Map(sorted), equal_to([[("a", 3), ("b", 1)]]), label="items")
        assert_that(counts["users"] | "U" >> beam.Map(sorted), equal_to([[("u1", 3), ("u2", 1)]]), label="users")
        assert_that(counts["categories"] | "C" >> beam.Map(sorted), equal_to([[("Art", 2), ("Space", 1)]]),
                    label="categories")


def test_write_vocabularies_most_frequent_first_ties_by_token(tmp_path):
    layout = DataLayout(str(tmp_path))
    with test_pipeline() as p:
        sizes = {"items": p | "Items" >> beam.Create([[("b", 2), ("a", 2), ("c", 5)]]),
                 "users": p | "Users" >> beam.Create([[("u", 1)]])} | WriteVocabularies(layout)
        assert_that(sizes, equal_to([("items", 3), ("users", 1)]))
    assert Path(layout.vocab("items")).read_text() == "c\na\nb\n"


def test_write_popularity_and_cold_items(tmp_path):
    layout = DataLayout(str(tmp_path))
    with test_pipeline() as p:
        _ = p | "Counts" >> beam.Create([[("a", 1), ("b", 4)]]) | WritePopularity(layout)
        _ = p | "Cold" >> beam.Create([frozenset({"z", "x"})]) | WriteColdItems(layout)
    assert Path(layout.popularity).read_text() == "b\t4\na\t1\n"
    assert Path(layout.cold_items).read_text() == "x\nz\n"


def _stats_parts(p, rejected_interactions: int):
    rejected = [(("interaction", "rating_out_of_range"),
                 {"count": rejected_interactions, "values": [6.0, 10.0],
                  "example": {"origin": "interactions.csv:2", "raw": "u1,i1,1700000000,7", "detail": "rating 7"}})]
    one = lambda label, value: p | label >> beam.Create([value])  # noqa: E731
    return {
        "read": p | "Read" >> beam.Create([("interaction", 10), ("item", 2)]),
        "rejected": p | "Rejected" >> beam.Create(rejected[:1] if rejected_interactions else []),
        "summaries": p | "Summaries" >> beam.Create([("train", {"examples": 10 - rejected_interactions, "users": 1,
                                                                "items": 2, "first_timestamp": 1, "last_timestamp": 2})]),
        "vocab_sizes": p | "Sizes" >> beam.Create([("items", 2)]),
        "cutoffs": one("Cutoffs", {"total": 10, "valid_start": 5, "test_start": 6}),
        "cold_items": one("ColdItems", frozenset()),
        "item_counts": one("ItemCounts", [("i1", 9), ("i2", 1)]),
        "catalog_items": one("CatalogItems", 2),
        "catalog_users": one("CatalogUsers", 0),
    }


@pytest.mark.parametrize("rejected", [0, 8])
def test_write_stats_reconciles_and_the_check_names_the_fix(tmp_path, rejected):
    layout = DataLayout(str(tmp_path))
    config = DataConfig(dataset="csv", rating_range=RatingRange(0, 5))
    with test_pipeline() as p:
        _ = _stats_parts(p, rejected) | WriteStats(config, layout)
    stats = json.loads(Path(layout.stats).read_text())
    interactions = stats["reconciliation"]["interactions"]
    assert interactions == {"read": 10, "written": 10 - rejected, "rejected": rejected, "balanced": True}
    if not rejected:
        assert rejection_problem(stats, config.max_rejected_share) is None
        check_rejections(stats, config, layout)
        return
    with pytest.raises(TooManyRejected) as err:
        check_rejections(stats, config, layout)
    message = str(err.value)
    assert "rejected 8 of 10 interactions (80.0%)" in message and "rating_out_of_range" in message
    assert "interactions.csv:2" in message and "u1,i1,1700000000,7" in message
    assert "--rating-range 0,10" in message
    assert rejection_problem(stats, 0.9) is None  # the threshold is a setting
