"""The split and history rules on hand-made sequences, checked exactly."""
import apache_beam as beam
from beam_helpers import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from tworec import contract, example_codec
from tworec.beam.sequences import BuildExamples, Event, UserSequence
from tworec.beam.splits import DAY, SplitConfig, TimeCutoffs, select_cold_items


def _examples(config, sequence, cutoffs, cold):
    out = {}
    for tagged in BuildExamples(config, history_length=3).process(("u", sequence), cutoffs, cold):
        out[tagged.tag] = [example_codec.decode(contract.INTERACTION_FEATURES, r)
                           for r in tagged.value.records]
    return out


def test_history_is_strictly_before_most_recent_first_and_split_aware():
    seq = tuple(Event(i, t, 1.0, f"f:{n}") for n, (i, t) in enumerate(
        [("a", 1), ("b", 2), ("c", 2), ("x", 3), ("d", 4), ("e", 6), ("f", 7)]))
    config = SplitConfig(tfrs_train_fraction=0.999999)  # every interaction in tfrs_train
    out = _examples(config, seq, {"valid_start": 6, "test_start": 7}, frozenset({"x"}))
    train = {e["item_id"]: e["history_item_ids"] for e in out["train"]}
    # b and c share timestamp 2: neither is in the other's history.
    assert train == {"a": [], "b": ["a"], "c": ["a"], "d": ["c", "b", "a"]}
    # The cold item's train-period interaction is kept out of train and out of train histories...
    assert [e["item_id"] for e in out["cold_train_period"]] == ["x"]
    # ...but the user's later (valid/test) state includes it, capped at history_length=3.
    assert [(e["item_id"], e["history_item_ids"]) for e in out["valid"]] == [("e", ["d", "x", "c"])]
    assert [(e["item_id"], e["history_item_ids"]) for e in out["test"]] == [("f", ["e", "d", "x"])]
    assert [e["history_timestamps"] for e in out["test"]] == [[6, 4, 3]]
    assert len(out["tfrs_train"]) == len(seq) and "tfrs_test" not in out


def test_tfrs_histories_only_use_tfrs_train_interactions():
    seq = tuple(Event(f"i{n}", n, 0.0, f"f:{n}") for n in range(40))
    out = _examples(SplitConfig(), seq, {"valid_start": 100, "test_start": 200}, frozenset())
    train_ids = {e["item_id"] for e in out["tfrs_train"]}
    assert 0 < len(out["tfrs_test"]) < len(seq)
    for e in out["tfrs_train"] + out["tfrs_test"]:
        assert set(e["history_item_ids"]) <= train_ids


def test_user_sequence_rejects_unknown_items_and_duplicates_keeping_the_first():
    group = [("a", 5, 1.0, "f:9"), ("a", 5, 2.0, "f:3"), ("zz", 1, 1.0, "f:4"), ("b", 1, 1.0, "f:1")]
    outputs = list(UserSequence().process(("u", group), frozenset({"a", "b"})))
    main = [o for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)]
    rejected = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert main == [("u", (Event("b", 1, 1.0, "f:1"), Event("a", 5, 2.0, "f:3")))]
    assert sorted((r.reason, r.origin) for r in rejected) == [("duplicate", "f:9"), ("unknown_item", "f:4")]


def test_time_cutoffs_are_exact_and_keep_ties_together():
    # 100 interactions: one per second for 70 s on day 0, then 30 at one instant on day 2.
    batches = [[t] for t in range(70)] + [[2 * DAY + 5] * 30]
    with test_pipeline() as p:
        cutoffs = p | beam.Create(batches) | TimeCutoffs(SplitConfig(train_fraction=0.6, valid_fraction=0.1))
        # rank 60 → second 60; rank 70 falls in the tie at 2 days + 5 s.
        assert_that(cutoffs, equal_to([{"total": 100, "valid_start": 60, "test_start": 2 * DAY + 5}]))


def test_cold_selection_is_seeded_exact_in_size_and_order_independent():
    ids = [f"i{n}" for n in range(1000)]
    a = select_cold_items(ids, SplitConfig(seed=1))
    assert len(a) == 100
    assert a == select_cold_items(list(reversed(ids)), SplitConfig(seed=1))
    assert a != select_cold_items(ids, SplitConfig(seed=2))
