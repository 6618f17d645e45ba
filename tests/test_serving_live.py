"""The live loop served for real: RecordEvents over gRPC into the durable log and the live state,
Recommend reading a user's recorded items, catalog changes that survive a restart, a gateway
killed with SIGKILL while events stream in, and two replicas sharing one real Redis."""
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

T_NOW = int(time.time())


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory):
    from conftest import repo_copy

    return repo_copy(tiny_repo, tmp_path_factory, "live")


def _events(pb, user, items, first=0, kind=None, t=None):
    return [pb.Event(event_id=f"{user}-{first + j}", user_id=user, item_id=item, type=kind or pb.CLICK,
                     timestamp=(t or T_NOW) - 100 + j) for j, item in enumerate(items)]


def _one_topic_items(bundle, n):
    """``n`` warm items of the most common first category."""
    rows = bundle.items.tables.item_category_rows[:, 0]
    warm = [r for r in range(len(bundle.items.item_ids)) if not bundle.items.cold[r]]
    topic = max(set(rows[warm]), key=list(rows[warm]).count)
    return [bundle.items.item_ids[r] for r in warm if rows[r] == topic][:n]


def test_recorded_items_are_the_history_of_the_next_recommend(repo):
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.live.config import LiveConfig
    from tworec.live.exploration import ExplorationConfig
    from tworec.serving.server import Service

    # No slot: its draw is random per answer, and this test compares answers.
    config = ServeConfig(repo=str(repo), live=LiveConfig(replica="one", trending=False),
                         exploration=ExplorationConfig(enabled=False))
    with Service(config) as service, RecommenderClient(service.address, timeout_s=10) as client:
        items = _one_topic_items(service.bundle, 4)
        before = client.recommend("fresh-visitor", k=10, context={"now": str(T_NOW)})
        reply = client.stub.RecordEvents(pb.RecordEventsRequest(events=_events(pb, "fresh-visitor", items)),
                                         timeout=10)
        assert (reply.accepted, reply.duplicates, list(reply.rejected)) == (4, 0, [])
        context = {"now": str(T_NOW)}
        served = client.recommend("fresh-visitor", k=10, context=context)
        assert [i.item_id for i in served.items] != [i.item_id for i in before.items]  # the history moved it
        # The same answer as a request carrying those items itself (newest first, their times).
        explicit = client.recommend("another-visitor", list(reversed(items)), k=10, context=context,
                                    recent_timestamps=[T_NOW - 100 + j for j in reversed(range(4))])
        assert [i.item_id for i in served.items] == [i.item_id for i in explicit.items]
        assert {i.stage for i in served.items} == {pb.RANKER} and not set(items) & {i.item_id for i in served.items}
        assert served.request_id and served.request_id != explicit.request_id
        # A request's own history is merged in: one more item, newest, and the recorded ones.
        extra = _one_topic_items(service.bundle, 5)[4]
        merged = client.recommend("fresh-visitor", [extra], k=10, context=context, recent_timestamps=[T_NOW])
        both = client.recommend("another-visitor", [extra, *reversed(items)], k=10, context=context,
                                recent_timestamps=[T_NOW, *[T_NOW - 100 + j for j in reversed(range(4))]])
        assert [i.item_id for i in merged.items] == [i.item_id for i in both.items]
        # Re-sent events are applied once; an unknown item is logged but counts for nothing yet.
        again = client.stub.RecordEvents(pb.RecordEventsRequest(
            events=_events(pb, "fresh-visitor", items) + _events(pb, "fresh-visitor", ["not-in-catalog"], 9)),
            timeout=10)
        assert (again.accepted, again.duplicates) == (1, 4)
        assert service.recorder.state.shares(["not-in-catalog"])[0] == 0


def test_catalog_changes_and_events_survive_a_restart(repo):
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.live.config import LiveConfig
    from tworec.serving.server import Service

    config = ServeConfig(repo=str(repo), live=LiveConfig(replica="restarted"))
    new_item = {"item_id": "live-new-1", "title": "Rockets, orbits and a telescope", "description": "Space.",
                "categories": ["Space"]}
    with Service(config) as service, RecommenderClient(service.address, timeout_s=10) as client:
        client.upsert_items([new_item])
        client.remove_items([_one_topic_items(service.bundle, 1)[0]])
        client.stub.RecordEvents(pb.RecordEventsRequest(events=_events(pb, "returning", ["live-new-1"])), timeout=10)
        removed = set(service.bundle.removed)
        state_before = service.recorder.state.user("returning")
    with Service(config) as service, RecommenderClient(service.address, timeout_s=10) as client:
        assert "live-new-1" in service.bundle.items.row_of and service.bundle.removed == removed
        assert service.recorder.state.user("returning") == state_before
        similar = client.similar_items(item_id="live-new-1", k=3)
        assert len(similar.items) == 3


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


def _serve(repo, replica, port):
    return subprocess.Popen([sys.executable, "-m", "tworec.cli", "serve", "--repo", str(repo), "--replica", replica,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)


def _wait_ready(process, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip():
            return line.strip()
        if process.poll() is not None:
            raise AssertionError(f"tworec serve exited with {process.returncode}")
    raise AssertionError("tworec serve did not start")


def test_a_gateway_killed_while_events_stream_in_loses_no_acknowledged_event(repo):
    from conftest import free_port
    from tworec.live.event_log import read_records
    from tworec.serving.config import ServeConfig
    from tworec.serving.client import RecommenderClient, pb

    port = free_port()
    gateway = _serve(repo, "killed", port)
    address = _wait_ready(gateway)
    acknowledged, errors, stop = [], [], threading.Event()

    def stream():
        with RecommenderClient(address, timeout_s=5) as client:
            n = 0
            while not stop.is_set():
                batch = _events(pb, f"streamer{n % 7}", [f"i{n % 50:07d}", f"i{(n + 3) % 50:07d}"], first=n)
                try:
                    reply = client.stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=5)
                    acknowledged.extend(e.event_id for e in batch if reply.accepted + reply.duplicates == len(batch))
                except grpc.RpcError as err:
                    errors.append(err.code())
                    return  # the gateway is gone
                n += 2

    streamer = threading.Thread(target=stream)
    streamer.start()
    # Kill mid-stream once a good number is acknowledged: a fixed wait saw none on a slow machine.
    deadline = time.monotonic() + 60
    while len(acknowledged) <= 100 and streamer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    triton = _children(gateway.pid)
    os.kill(gateway.pid, signal.SIGKILL)
    streamer.join(30)
    stop.set()
    gateway.wait(10)
    for pid in triton:  # the killed gateway's Triton: not part of the test
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    assert len(acknowledged) > 50, f"the stream ended with {errors} before the kill"
    logged = [r["event_id"] for r in read_records(ServeConfig(repo=str(repo)).event_log) if r.get("kind") == "event"
              and r["user_id"].startswith("streamer")]
    assert set(acknowledged) <= set(logged)
    assert len(logged) == len(set(logged))  # exactly once
    restarted = _serve(repo, "killed", free_port())
    try:
        address = _wait_ready(restarted)
        with RecommenderClient(address, timeout_s=10) as client:
            # A re-send of what was acknowledged before the kill is a duplicate: the state was rebuilt.
            last = _events(pb, "streamer0", ["i0000000"], first=0)
            assert client.stub.RecordEvents(pb.RecordEventsRequest(events=last), timeout=10).duplicates == 1
            answer = client.recommend("streamer0", k=10)
            recorded = {e.item_id for e in last} | {f"i{n % 50:07d}" for n in range(0, 50, 14)}
            assert answer.items and not recorded & {i.item_id for i in answer.items}
    finally:
        os.killpg(restarted.pid, signal.SIGTERM)
        restarted.wait(30)


def test_two_replicas_share_one_redis(repo, redis_url, tmp_path):
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.live.config import LiveConfig
    from tworec.live.exploration import ExplorationConfig
    from tworec.serving.server import Service

    live = dict(state=redis_url, redis_prefix=f"replicas{os.getpid()}")
    no_slot = ExplorationConfig(enabled=False)  # answers are compared: no random slot
    first = ServeConfig(repo=str(repo), live=LiveConfig(replica="a", **live), exploration=no_slot)
    with Service(first) as a:
        second = ServeConfig(repo=str(repo), triton_address=a.models.address,
                             live=LiveConfig(replica="b", **live), exploration=no_slot)
        with Service(second) as b, RecommenderClient(a.address, timeout_s=10) as at_a, \
                RecommenderClient(b.address, timeout_s=10) as at_b:
            items = _one_topic_items(a.bundle, 3)
            context = {"now": str(T_NOW)}
            before = at_b.recommend("shared-user", k=10, context=context)
            reply = at_a.stub.RecordEvents(pb.RecordEventsRequest(events=_events(pb, "shared-user", items)),
                                           timeout=10)
            assert reply.accepted == 3
            after = at_b.recommend("shared-user", k=10, context=context)
            assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
            assert not set(items) & {i.item_id for i in after.items}
            # The same event re-sent to the other replica is a duplicate there too.
            again = at_b.stub.RecordEvents(pb.RecordEventsRequest(events=_events(pb, "shared-user", items)),
                                           timeout=10)
            assert (again.accepted, again.duplicates) == (0, 3)


def test_the_exploration_slot_serves_new_items_logs_decisions_and_keeps_its_posteriors(repo, tmp_path):
    from tworec.evaluation.policy import evaluate_policy, logged_decisions
    from tworec.live.config import LiveConfig
    from tworec.live.event_log import read_records
    from tworec.live.exploration import ExplorationConfig
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.serving.server import Service

    # The displaced item does not compete here, so every answer explores (it does below).
    config = ServeConfig(repo=str(repo), live=LiveConfig(replica="explorer", event_log=str(tmp_path / "events")),
                         exploration=ExplorationConfig(position=3, displaced_competes=False))
    with Service(config) as service, RecommenderClient(service.address, timeout_s=10) as client:
        bundle = service.bundle
        user = next(iter(bundle.user_rows))
        history = _one_topic_items(bundle, 3)
        excluded = [bundle.items.item_ids[r] for r in bundle.new_items()[0][:5]]
        shown = []
        for n in range(30):
            answer = client.recommend(user, history, k=10, exclude_item_ids=excluded)
            slot = answer.items[3]
            assert slot.stage == pb.EXPLORATION and 0 < slot.propensity <= 1 and slot.cold
            assert slot.item_id not in set(history) | set(excluded)
            assert bundle.items.tables.item_row[bundle.items.row_of[slot.item_id]] == 0  # no id embedding
            assert all(i.propensity == 1.0 for j, i in enumerate(answer.items) if j != 3)
            shown.append((answer.request_id, slot.item_id))
        # Impressions and clicks come back with the answer's id and the slot's position.
        events = [pb.Event(event_id=f"imp-{r}", user_id=user, item_id=i, type=pb.IMPRESSION, timestamp=T_NOW,
                           request_id=r, position=3, propensity=0.5) for r, i in shown]
        events += [pb.Event(event_id=f"clk-{r}", user_id=user, item_id=i, type=pb.CLICK, timestamp=T_NOW + 1,
                            request_id=r, position=3) for r, i in shown[:10]]
        assert client.stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10).accepted == 40
        clicked = shown[0][1]
        impressions, clicks = service.recorder.state.exposure([clicked])
        assert impressions[0] == sum(i == clicked for _, i in shown)
        assert clicks[0] == sum(i == clicked for _, i in shown[:10])
        before = service.recorder.state.exposure([i for _, i in shown])
    decisions = [r for r in read_records(tmp_path / "events") if r.get("kind") == "decision"]
    assert {r["request_id"] for r in decisions} == {r for r, _ in shown}
    logged, counts = logged_decisions(tmp_path / "events")
    assert counts["used"] == 30 and sum(d.reward for d in logged) == 10
    estimate = evaluate_policy(logged, "thompson", ExplorationConfig(position=3))
    assert estimate["n"] == 30 and estimate["ess"] > 0
    with Service(config) as service:  # a restart: the posteriors come back from the event log
        after = service.recorder.state.exposure([i for _, i in shown])
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])


def test_where_the_displaced_item_wins_the_slot_the_answer_is_kept_and_the_decision_logged(repo, tmp_path):
    """With the answer's last item competing for the slot, an answer either shows a new item at the
    slot (the rest ranked) or is the ranked answer with the last item's propensity the policy's
    probability of keeping it; each decision is logged at the position of what it chose."""
    from tworec.live.config import LiveConfig
    from tworec.live.event_log import read_records
    from tworec.live.exploration import ExplorationConfig
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.serving.server import Service

    config = ServeConfig(repo=str(repo), live=LiveConfig(replica="displaced", event_log=str(tmp_path / "events")),
                         exploration=ExplorationConfig(position=3))
    answers = {}
    with Service(config) as service, RecommenderClient(service.address, timeout_s=10) as client:
        for user in list(service.bundle.user_rows)[:40]:
            answer = client.recommend(user, k=10)
            stages = [i.stage for i in answer.items]
            if stages[3] == pb.EXPLORATION:
                assert stages.count(pb.RANKER) == 9 and 0 < answer.items[3].propensity <= 1
                chosen = (3, answer.items[3].item_id, answer.items[3].propensity)
            else:
                assert stages == [pb.RANKER] * 10 and 0 < answer.items[9].propensity < 1
                assert all(i.propensity == 1.0 for i in answer.items[:9])
                chosen = (9, answer.items[9].item_id, answer.items[9].propensity)
            answers[answer.request_id] = chosen
        counters = service.recommender.counters
        kept = sum(position == 9 for position, _, _ in answers.values())
        assert (counters["exploration"], counters["exploration_kept"]) == (len(answers) - kept, kept)
    decisions = {r["request_id"]: r for r in read_records(tmp_path / "events") if r.get("kind") == "decision"}
    assert set(decisions) == set(answers)
    for request_id, (position, item, propensity) in answers.items():
        logged = decisions[request_id]
        assert (logged["position"], logged["chosen"]) == (position, item)
        assert logged["propensity"] == pytest.approx(propensity, abs=1e-5) and logged["displaced"]
        assert (logged["candidates"][-1] == item) == (position == 9)


def test_the_displaced_items_prior_comes_from_its_score_without_the_live_term():
    """The click prior was fitted on retrieval scores without the live-count term, and the new
    items' scores have none: the displaced item's prior must not count its trending boost."""
    from tworec.serving.gateway import Candidates

    live = np.log1p(np.array([0.0, 40.0, 3.0], np.float32))
    candidates = Candidates(np.zeros(4), ["a", "b", "c"], np.array([0.9, 0.6, 0.4], np.float32) + 0.05 * live, live)
    assert candidates.content_score("b", 0.05) == pytest.approx(0.6, abs=1e-6)
    assert candidates.content_score("c", 0.0) == pytest.approx(0.4 + 0.05 * np.log1p(3.0), abs=1e-6)
    assert Candidates(np.zeros(4), ["a"], np.array([0.3])).content_score("a", 0.05) == pytest.approx(0.3)


def test_above_index_above_the_slot_searches_an_index_of_the_new_items_kept_current(repo):
    """Past ``index_above`` candidates the slot's pool comes from a ScaNN index of the items without
    an id embedding (built at load); it ranks as exact scoring does (brute force at this size),
    and upserts and removals reach it."""
    from tworec.export.artifact import DeploymentRepository
    from tworec.serving.bundle import Bundle

    version = DeploymentRepository(str(repo)).current_version()
    exact, indexed = Bundle(str(repo), version), Bundle(str(repo), version)
    indexed.prepare_exploration(index_above=0)
    assert indexed._exploration_index is not None
    exact.prepare_exploration(index_above=10**9)
    assert exact._exploration_index is None
    rows = exact.new_items()[0]
    assert len(rows) > 20
    query = exact.query(0, [int(rows[0])], [T_NOW - 60], T_NOW)
    for k in (1, 10, len(rows)):
        ids_exact, scores_exact = exact.exploration_ranking(query).top(k)
        ids_indexed, scores_indexed = indexed.exploration_ranking(query).top(k)
        np.testing.assert_allclose(scores_indexed, scores_exact, rtol=1e-4, atol=1e-4)
        assert set(ids_indexed[:k - 1]) <= set(ids_exact) and len(indexed.exploration_ranking(query)) == len(rows)
    strong = (query / np.linalg.norm(query) * 50.0)[None, :]
    categories = exact.category_rows([])[None, :]
    for bundle in (exact, indexed):
        bundle.upsert(["brand-new"], ["Brand new"], strong, categories)
        assert bundle.exploration_ranking(query).top(1)[0] == ["brand-new"]
        bundle.remove(["brand-new"])
    assert "brand-new" not in indexed.exploration_ranking(query).top(len(rows) + 1)[0]
