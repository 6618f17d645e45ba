"""The split and history rules on hand-made sequences, checked exactly."""
import apache_beam as beam
from beam_helpers import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from tworec import contract, example_codec
from tworec.beam.records import Interaction
from tworec.beam.sequences import (
    BuildExamples, Event, SplitSizes, UserEvents, UserSequence, keyed_by_user, unpack_event,
)
from tworec.beam.splits import DAY, SplitConfig, TimeCutoffs, select_cold_items


def _user_events(user, events) -> UserEvents:
    return UserEvents(user, tuple(e.item_id for e in events), tuple(e.timestamp for e in events),
                      tuple(e.rating for e in events))


def _examples(config, sequence, cutoffs, cold):
    out = {}
    for tagged in BuildExamples(config, history_length=3).process(_user_events("u", sequence), cutoffs, cold):
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


def test_split_sizes_count_the_temporal_examples_exactly():
    """SplitSizes (which sizes each split's shards before its examples exist) agrees with what
    BuildExamples writes in the temporal splits and keeps the TFRS total."""
    sequences = [(u, tuple(Event(f"i{(u * 7 + n) % 9}", 10 * n + u, 1.0, f"f:{n}") for n in range(5 + u)))
                 for u in range(6)]
    cutoffs, cold, config = {"valid_start": 30, "test_start": 45}, frozenset({"i3", "i5"}), SplitConfig()
    written = {}
    for key, seq in sequences:
        for split, examples in _examples(config, seq, cutoffs, cold).items():
            written[split] = written.get(split, 0) + len(examples)
    with test_pipeline() as p:
        sizes = (p | beam.Create([_user_events(u, seq) for u, seq in sequences])
                 | SplitSizes(config, p | "Cutoffs" >> beam.Create([cutoffs]), p | "Cold" >> beam.Create([cold])))
        temporal = [s.value for s in contract.TEMPORAL_SPLITS]
        expected = {s: written.get(s, 0) for s in temporal}
        total = sum(len(seq) for _, seq in sequences)
        assert_that(sizes | beam.Map(lambda d: ({s: d[s] for s in temporal},
                                                d["tfrs_train"] + d["tfrs_test"])),
                    equal_to([(expected, total)]))


def test_user_sequence_rejects_unknown_items_and_duplicates_keeping_the_first():
    group = [keyed_by_user(Interaction("u", *row)) for row in (
        ("a", 5, 1.0, "f:9"), ("a", 5, 2.0, "f:3"), ("zz", 1, 1.0, "f:4"), ("b", 1, 1.0, "f:1"))]
    assert {key for key, _ in group} == {"u"}
    outputs = list(UserSequence().process(("u", [packed for _, packed in group]), frozenset({"a", "b"})))
    main = [o for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)]
    rejected = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert main == [UserEvents("u", ("b", "a"), (1, 5), (1.0, 2.0))]
    assert sorted((r.reason, r.origin) for r in rejected) == [("duplicate", "f:9"), ("unknown_item", "f:4")]


def test_a_packed_event_comes_back_whole():
    """keyed_by_user packs an event into one string for the shuffle; any origin text survives."""
    for rating in (0.0, 4.5, 1 / 3):
        r = Interaction("u-1", "item:7", 1_700_000_000, rating, "dir/x\x1fy.csv:12")
        key, packed = keyed_by_user(r)
        assert key == "u-1" and unpack_event(packed) == Event("item:7", 1_700_000_000, rating, "dir/x\x1fy.csv:12")


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
