"""The live loop's parts on their own: the durable event log, the two state stores (the embedded one
and a real Redis, started here), decayed counts, and the recorder that ties them together."""
import json
import threading

import numpy as np
import pytest

from tworec.contract import Event, EventType
from tworec.live import decay
from tworec.live.config import LiveConfig
from tworec.live.event_log import EventLog, read_lines, read_records, segments
from tworec.live.recorder import EventRecorder
from tworec.live.state import EmbeddedState, RedisState

DAY = 86_400
T0 = 1_700_000_000


def _event(n, user="u1", item="i1", kind=EventType.CLICK, t=T0, **extra):
    return Event(f"e{n}", user, item, kind, t + n, **extra)


# --- the event log ---------------------------------------------------------------------------------
def test_concurrent_appends_are_each_durable_once_in_order_per_batch(tmp_path):
    log = EventLog(tmp_path / "r1")
    batches = [[{"n": t * 100 + i} for i in range(10)] for t in range(16)]
    threads = [threading.Thread(target=log.append, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = [r["n"] for r in read_records(tmp_path)]
    assert sorted(written) == sorted(r["n"] for b in batches for r in b) and log.appended == 160
    for b in batches:  # a batch is one write: its records stay together and in order
        start = written.index(b[0]["n"])
        assert written[start:start + 10] == [r["n"] for r in b]


def test_records_appended_later_reach_the_log_on_the_writers_timer_and_at_close(tmp_path):
    """Serving decisions are queued (``append_later``): the writer takes them within its timer
    without the caller waking it, a full queue wakes it, and close writes what is left."""
    import time

    log = EventLog(tmp_path / "r1")
    log.append_later([{"n": 0}])
    deadline = time.monotonic() + 10
    while not list(read_records(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["n"] for r in read_records(tmp_path)] == [0]
    log.append_later([{"n": n} for n in range(1, EventLog.LATER_BATCH + 1)])
    log.append_later([{"n": EventLog.LATER_BATCH + 1}])
    log.close()
    assert [r["n"] for r in read_records(tmp_path)] == list(range(EventLog.LATER_BATCH + 2))


def test_segments_rotate_by_size_and_age_and_at_every_open(tmp_path):
    log = EventLog(tmp_path / "r1", max_bytes=200)
    for i in range(10):
        log.append([{"n": i, "pad": "x" * 40}])
    assert len(segments(tmp_path / "r1")) >= 3
    log.close()
    aged = EventLog(tmp_path / "r1", max_seconds=0.0)
    before = len(segments(tmp_path / "r1"))
    aged.append([{"n": 10}])
    aged.append([{"n": 11}])
    assert len(segments(tmp_path / "r1")) == before + 1  # the second append found the first segment too old
    assert [r["n"] for r in read_records(tmp_path)] == list(range(12))


def test_a_torn_last_line_is_never_read_and_is_dropped_at_open(tmp_path):
    log = EventLog(tmp_path / "r1")
    log.append([{"n": 1}, {"n": 2}])
    log.close()
    last = segments(tmp_path / "r1")[-1].path
    with open(last, "ab") as handle:
        handle.write(b'{"n": 3, "half a wri')
    assert [json.loads(x)["n"] for x in read_lines(last)] == [1, 2]
    EventLog(tmp_path / "r1").close()  # opening repairs the tail
    assert last.read_bytes().endswith(b"\n") and [r["n"] for r in read_records(tmp_path)] == [1, 2]


# --- decayed counts --------------------------------------------------------------------------------
def test_decayed_counts_halve_every_half_life_and_see_only_earlier_events():
    half = 7 * DAY
    assert decay.decayed(decay.log_weight(T0, half), T0 + half, half) == pytest.approx(0.5)
    # Log-adding keeps long spans of short half-lives finite: a year of hourly half-lives.
    stored = decay.log_add(decay.log_weight(T0, 3600), decay.log_weight(T0 + 365 * DAY, 3600))
    assert decay.decayed(stored, T0 + 365 * DAY, 3600) == pytest.approx(1.0)
    times, rows = np.array([T0, T0 + DAY, T0 + 2 * DAY]), np.array([3, 3, 5])
    got = decay.DecayedCounts(times, rows, half).at(np.array([T0, T0 + DAY + 1, T0 + 9 * DAY]),
                                                    np.array([[3, 5], [3, 5], [3, 5]]))
    assert got[0].tolist() == [0, 0]  # strictly before: nothing yet at T0
    assert got[1][0] == pytest.approx(2 ** (-(DAY + 1) / half) + 2 ** (-1 / half)) and got[1][1] == 0
    assert got[2][1] == pytest.approx(2 ** (-7 * DAY / half))


def test_decayed_counts_built_once_read_anywhere_equal_the_sum_over_earlier_events():
    rng = np.random.default_rng(5)
    half = 3 * DAY
    times = T0 + rng.integers(0, 30 * DAY, 400)
    rows = rng.integers(0, 40, 400)
    counts = decay.DecayedCounts(times, rows, half)
    # Query times before, among and after the events; rows with and without events, and past them.
    query_times = np.r_[T0 - DAY, times[:5], T0 + 40 * DAY, rng.integers(T0, T0 + 30 * DAY, 20)]
    query_rows = rng.integers(0, 50, (len(query_times), 30))
    expected = np.array([[np.sum(2.0 ** (-(t - times[(rows == r) & (times < t)]) / half)) for r in qr]
                         for t, qr in zip(query_times, query_rows)])
    np.testing.assert_allclose(counts.at(query_times, query_rows), expected, rtol=1e-9, atol=1e-12)
    assert not counts.at(query_times[:1], query_rows[:1]).any()  # before every event: nothing
    empty = decay.DecayedCounts(np.zeros(0, np.int64), np.zeros(0, np.int64), half)
    assert not empty.at(query_times, query_rows).any()


# --- the state stores, embedded and Redis ------------------------------------------------------------
@pytest.fixture(params=["embedded", "redis"])
def state(request, redis_url):
    config = LiveConfig(seen_items=3, trending_candidates=2, redis_prefix=f"t{np.random.randint(1 << 30)}")
    store = EmbeddedState(config, DAY) if request.param == "embedded" else RedisState(config, DAY, redis_url)
    yield store
    store.close()


def test_a_user_keeps_their_newest_items_and_an_item_once(state):
    events = [_event(1, item="a"), _event(2, item="b"), _event(3, item="a"), _event(4, item="c"),
              _event(5, item="d"), _event(6, item="old", t=T0 - DAY)]
    state.record(events, [True] * len(events))
    assert state.user("u1") == [("d", T0 + 5), ("c", T0 + 4), ("a", T0 + 3)]  # 3 kept, "a" once, newest first
    state.record([_event(7, item="b", kind=EventType.IMPRESSION)], [True])  # impressions are not interactions
    assert [i for i, _ in state.user("u1")] == ["d", "c", "a"] and state.user("nobody") == []


def test_trending_counts_decay_and_unknown_items_do_not_count(state):
    now = T0 + 10 * DAY
    events = [_event(i, user=f"u{i}", item="hot", t=now - 100) for i in range(3)]
    events += [_event(10, item="warm", t=now - DAY), _event(11, item="new-item", t=now)]
    state.record(events, [True] * 4 + [False])
    top = dict(state.trending(now, 5))
    assert list(top) == ["hot", "warm"]
    assert top["hot"] == pytest.approx(sum(2 ** (-(100 - i) / DAY) for i in range(3)), rel=1e-9)
    assert top["warm"] == pytest.approx(2 ** (-(DAY - 10) / DAY), rel=1e-9)
    assert [i for i, _ in state.user("u1")] == ["new-item", "hot", "warm"]  # the user still had it
    total = top["hot"] + top["warm"]
    np.testing.assert_allclose(state.shares(["hot", "warm", "new-item", "never"]),
                               [top["hot"] / total, top["warm"] / total, 0, 0], rtol=1e-9)
    surge = [_event(20 + i, user=f"s{i}", item="surging", t=now) for i in range(4)]
    state.record(surge, [True] * 4)  # after a read: the next read sees the new order
    assert [i for i, _ in state.trending(now, 2)] == ["surging", "hot"]
    assert state.trending(now, 2)[0][1] == pytest.approx(sum(2 ** ((20 + i) / DAY) for i in range(4)), rel=1e-9)


def test_shares_are_zero_before_any_event(state):
    np.testing.assert_array_equal(state.shares(["a", "b"]), [0.0, 0.0])


def test_the_served_live_feature_is_the_one_the_models_were_fitted_on(state):
    """The gateway's feature (the state's shares) equals the offline one the retrieval weight and
    the ranker were fitted on (towers/live_counts.py), for the same events."""
    from tworec.towers.live_counts import PostTrainingEvents

    rng = np.random.default_rng(3)
    rows, times = rng.integers(0, 12, 300), T0 + np.sort(rng.integers(0, 20 * DAY, 300))
    events = [Event(f"s{n}", f"u{n % 7}", f"i{r}", EventType.PURCHASE, int(t))
              for n, (r, t) in enumerate(zip(rows, times))]
    state.record(events, [True] * len(events))
    now = int(times[-1]) + 1
    offline = PostTrainingEvents(times, rows).features(np.array([now]), np.arange(14)[None], state.half_life_s)[0]
    served = decay.share_feature(state.shares([f"i{r}" for r in range(14)]))
    np.testing.assert_allclose(served, offline, rtol=1e-5)
    assert offline[12:].tolist() == [0, 0] and offline[:12].min() > 0


def test_an_event_id_is_claimed_once_until_released(state):
    assert state.claim(["x", "y"]) == [True, True]
    assert state.claim(["y", "z"]) == [False, True]
    state.release(["y"])
    assert state.claim(["y"]) == [True]


# --- the recorder -----------------------------------------------------------------------------------
def test_the_recorder_refuses_bad_events_with_reasons_and_applies_each_event_once(tmp_path):
    config = LiveConfig(replica="r1", max_future_s=60)
    recorder = EventRecorder.open(config, str(tmp_path), DAY)
    now = T0 + 1000
    from tworec.contract import EventReject

    batch = [_event(1, item="a"), _event(2, user="", item="a"), _event(3, item="b c"),
             _event(4, t=now + 500), _event(5, t=-10), EventReject.UNKNOWN_TYPE, _event(1, item="a"),
             _event(6, item="a", position=-4), _event(7, item="a", propensity=1.5), _event(8, item="z", value=float("nan")),
             _event(9, item="unknown-yet")]
    outcome = recorder.record(batch, lambda item: item != "unknown-yet", now=now)
    assert outcome.accepted == 2 and outcome.duplicates == 0
    assert dict(outcome.rejected) == {1: "bad_user_id", 2: "bad_item_id", 3: "future_timestamp", 4: "bad_timestamp",
                                      5: "unknown_type", 6: "repeated_in_call", 7: "bad_position",
                                      8: "bad_propensity", 9: "bad_value"}
    again = recorder.record([_event(1, item="a"), _event(20, item="c")], lambda item: True, now=now)
    assert (again.accepted, again.duplicates) == (1, 1)
    logged = [r["event_id"] for r in read_records(tmp_path)]
    assert sorted(logged) == ["e1", "e20", "e9"]  # each acknowledged event once; the unknown item too
    assert recorder.state.shares(["a", "unknown-yet"])[1] == 0  # logged, not counted
    recorder.close()

    # A restart rebuilds the embedded state from the log, and remembers the ids it applied.
    reopened = EventRecorder.open(config, str(tmp_path), DAY)
    assert reopened.replay(lambda item: item != "unknown-yet", lambda kind, record: None) == {"event": 3}
    assert [i for i, _ in reopened.state.user("u1")] == ["c", "unknown-yet", "a"]
    assert reopened.record([_event(1, item="a")], lambda item: True, now=now).duplicates == 1
    reopened.close()


# --- the events source ------------------------------------------------------------------------------
def test_the_events_source_joins_the_log_to_the_data_and_reconciles_exactly(synthetic_data, tmp_path):
    """Logged interactions (from two replicas, one event re-sent to both), an upserted item, a
    malformed line and an impression: every line is accounted for, and the new data folder holds
    the base interactions plus the logged ones."""
    from tworec import contract, example_codec
    from tworec.beam.config import DataConfig
    from tworec.beam.pipeline import run
    from tworec.tfrecord_io import read_records

    base = [example_codec.decode(contract.INTERACTION_FEATURES, r)
            for s in contract.TEMPORAL_SPLITS for r in read_records(str(synthetic_data / s.value / "part-*"))]
    last = max(e["timestamp"] for e in base)
    items = sorted({e["item_id"] for e in base})
    a, b = EventLog(tmp_path / "log" / "a"), EventLog(tmp_path / "log" / "b")
    clicks = [_event(i, user=f"fresh{i % 3}", item=items[i], t=last + 100) for i in range(6)]
    a.append([{"kind": "event", **e.to_json()} for e in clicks[:4]])
    b.append([{"kind": "event", **e.to_json()} for e in clicks[3:]])  # clicks[3] logged by both replicas
    a.append([{"kind": "upsert", "at": last, "items": [{"item_id": "brand-new", "title": "A new thing",
                                                         "description": "Rockets.", "categories": ["Space"]}]}])
    a.append([{"kind": "event", **_event(9, user="fresh0", item="brand-new", t=last + 200).to_json()},
              {"kind": "event", **_event(10, kind=EventType.IMPRESSION, item=items[0], t=last + 200).to_json()}])
    with open(a.current, "ab") as handle:
        handle.write(b"{not json\n")
    a.close(), b.close()

    stats = run(DataConfig(dataset="events", input=str(tmp_path / "log"), catalog=str(synthetic_data),
                           history_length=10), str(tmp_path / "data"))
    interactions = stats["reconciliation"]["interactions"]
    # + 8 logged interaction lines (7 events, one of them twice) + the malformed line
    assert interactions["balanced"] and interactions["read"] == len(base) + 8 + 1
    assert stats["rejected"]["interaction"] == {"duplicate_event": 1, "malformed_record": 1}
    assert interactions["written"] == len(base) + 7
    assert stats["read"]["impression"] == 1 and stats["reconciliation"]["items"]["balanced"]
    written = [example_codec.decode(contract.INTERACTION_FEATURES, r)
               for s in contract.TEMPORAL_SPLITS for r in read_records(str(tmp_path / "data" / s.value / "part-*"))]
    assert sum(e["user_id"].startswith("fresh") for e in written) == 7
    assert any(e["item_id"] == "brand-new" for e in written)
    catalog = [example_codec.decode(contract.ITEM_FEATURES, r)["item_id"]
               for r in read_records(str(tmp_path / "data" / "items" / "part-*"))]
    assert "brand-new" in catalog and len(catalog) == stats["catalog_items"] == len(set(catalog))
