"""Replay: the test period's events, in time order, through the real gateway and Triton.

    python benchmarks/bench_replay.py --run RUN --out FILE.json [--arms frozen live live_trending refreshed]

Before each event, ``Recommend(user_id)`` with no history in the request (the gateway knows the
user from its state); then the event goes in through ``RecordEvents``. Events at the same time
are all recommended for before any is recorded (histories are strictly before, as in eval). An
event is a hit when its item is in the top 10. Each arm is a fresh service on a copy of RUN/repo:

- ``frozen``: every user's history as of the training cutoff (the train period's interactions),
  nothing recorded after: what a batch-only system serves;
- ``live``: that history, the validation period's events recorded as a deployed gateway would
  have logged them, then each test event as it comes; trending off;
- ``live_trending``: the same with trending on;
- ``refreshed``: ``live_trending`` with one warm-start refresh halfway through the stream: the data
  job on its event log, train-retrieval and train-ranker --warm-start, tworec export into the
  served repository, and the gateway's hot reload.

Per arm and segment (all, warm, cold, tail as eval defines them): HitRate@10 and NDCG@10 with a
95% bootstrap interval over users, and events/s ingested (RecordEvents, batches of 100, durable).
The control replays ``frozen``, ``live`` and ``live_trending`` recording events whose items are
shuffled among the events (each keeps its user and time, so what the gateway learns carries no
information about the user or the item's moment) while the requests and their targets stay real:
the live arms' gains must vanish. Shuffling only the timestamps cannot make them vanish, since
every user would still be recorded with their own items (future ones included).
``live-frozen_by_history`` splits live − frozen by whether the event's user had events since the
training cutoff (only their answers can differ) and by repeats (items the user had before, which
live state excludes).

The exploration slot is off in every arm: the replay records no impressions, so its posteriors
would never learn, and its item would only stand between the arms and ``tworec eval``'s numbers.
``benchmarks/sim_exploration.py`` measures the slot.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import exit_on_sigterm  # noqa: E402

ARMS = ("frozen", "live", "live_trending", "refreshed")
SEGMENTS = ("all", "warm", "cold", "tail")
K = 10
BATCH = 100


def load_events(data_dir: str):
    """(before: train-period interactions, valid: validation ones, test: test ones), each a list of
    dicts with user, item, timestamp and rating, in time order; and the catalog for segments."""
    from tworec import contract
    from tworec.contract import Split
    from tworec.layout import DataLayout
    from tworec.towers.catalog import load_catalog
    from tworec.towers.scoring import decoded_examples

    layout = DataLayout(data_dir)
    fields = (contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP, contract.RATING)

    def split(*names):
        rows = [e for s in names for e in decoded_examples(layout, s, fields)]
        return sorted(rows, key=lambda e: (e["timestamp"], e["user_id"], e["item_id"]))

    return (split(Split.TRAIN, Split.COLD_TRAIN_PERIOD), split(Split.VALID), split(Split.TEST),
            load_catalog(data_dir))


def segments_of(catalog, items) -> dict:
    """Masks over ``items`` (ids): warm, cold, tail, as towers.scoring.JudgedSplit defines them."""
    from tworec.metrics import head_items

    row = catalog.row_of()
    rows = np.array([row[i] for i in items])
    warm = catalog.train_counts > 0
    head = head_items(catalog.train_counts)
    return {"all": np.ones(len(rows), bool), "warm": warm[rows], "cold": catalog.cold[rows],
            "tail": (warm & ~head)[rows]}


def same_time_groups(events):
    """(start, stop) of each run of ``events`` (in time order) that share a timestamp."""
    i = 0
    while i < len(events):
        j = i
        while j < len(events) and events[j]["timestamp"] == events[i]["timestamp"]:
            j += 1
        yield i, j
        i = j


def live_history_masks(before, valid, test) -> dict:
    """Masks over ``test`` (in time order) that say where live state can change an answer:
    ``live_history``: the user had an event after the training cutoff (in validation, or earlier in
    the test period) strictly before this one, so ``live`` and ``frozen`` send different histories;
    ``repeat``: the user had this event's item before it (live state excludes it; frozen excludes
    only the training period's items)."""
    from collections import defaultdict

    had, live = defaultdict(set), defaultdict(set)
    for e in before:
        had[e["user_id"]].add(e["item_id"])
    for e in valid:
        had[e["user_id"]].add(e["item_id"])
        live[e["user_id"]].add(e["item_id"])
    masks = {"live_history": np.zeros(len(test), bool), "repeat": np.zeros(len(test), bool)}
    for i, j in same_time_groups(test):  # events at the same time see only what came strictly before
        for n in range(i, j):
            masks["live_history"][n] = bool(live[test[n]["user_id"]])
            masks["repeat"][n] = test[n]["item_id"] in had[test[n]["user_id"]]
        for e in test[i:j]:
            had[e["user_id"]].add(e["item_id"])
            live[e["user_id"]].add(e["item_id"])
    masks["no_live_history"] = ~masks["live_history"]
    return masks


def _pb_events(pb, events, prefix: str):
    return [pb.Event(event_id=f"{prefix}:{e.get('seq', '')}:{e['user_id']}:{e['item_id']}:{e['timestamp']}",
                     user_id=e["user_id"],
                     item_id=e["item_id"], type=pb.RATING, timestamp=e["timestamp"], value=float(e["rating"]))
            for e in events]


def record(client, pb, events, prefix: str) -> float:
    """Records ``events`` in batches of BATCH; returns events/s."""
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        reply = client.stub.RecordEvents(pb.RecordEventsRequest(events=_pb_events(pb, events[i:i + BATCH], prefix)),
                                         timeout=30)
        if reply.rejected:
            raise RuntimeError(f"events rejected: {list(reply.rejected)[:3]}")
    return len(events) / max(time.perf_counter() - started, 1e-9)


def stream(client, pb, events, record_events: bool, on_half=None, recorded=None) -> tuple:
    """(rank of each event's item in its Recommend answer, 0 when absent) over the events in time
    order; ``on_half()`` runs once, at the first group past the middle. ``recorded``: what is
    recorded in place of each event (the control), by default the event itself."""
    recorded = events if recorded is None else recorded
    ranks = np.zeros(len(events), np.int64)
    half_done = on_half is None
    for i, j in same_time_groups(events):
        if not half_done and i >= len(events) // 2:
            on_half()
            half_done = True
        for n in range(i, j):
            e = events[n]
            answer = client.recommend(e["user_id"], k=K, context={"now": str(e["timestamp"])}, timeout_s=30)
            ids = [item.item_id for item in answer.items]
            ranks[n] = ids.index(e["item_id"]) + 1 if e["item_id"] in ids else 0
        if record_events:
            client.stub.RecordEvents(pb.RecordEventsRequest(events=_pb_events(pb, recorded[i:j], "test")), timeout=30)
    return ranks


def bootstrap(ranks: np.ndarray, users: np.ndarray, mask: np.ndarray, rounds: int, seed: int) -> dict:
    """HitRate@10 and NDCG@10 over the masked events, with 95% intervals from resampling users."""
    ranks, users = ranks[mask], users[mask]
    hit = (ranks > 0).astype(np.float64)
    gain = np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    if not len(ranks):
        return {"hitrate@10": 0.0, "ndcg@10": 0.0, "ci95_hitrate@10": [0.0, 0.0], "ci95_ndcg@10": [0.0, 0.0],
                "count": 0}
    unique, index = np.unique(users, return_inverse=True)
    per_user = np.stack([np.bincount(index, weights=x, minlength=len(unique)) for x in (hit, gain,
                                                                                      np.ones_like(hit))])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), (rounds, len(unique)))
    totals = per_user[:, draws].sum(axis=2)  # [3, rounds]
    hr, ndcg = totals[0] / totals[2], totals[1] / totals[2]
    return {"hitrate@10": round(float(hit.mean()), 4), "ndcg@10": round(float(gain.mean()), 4),
            "ci95_hitrate@10": [round(float(x), 4) for x in np.percentile(hr, [2.5, 97.5])],
            "ci95_ndcg@10": [round(float(x), 4) for x in np.percentile(ndcg, [2.5, 97.5])], "count": int(len(ranks))}


def paired_difference(a: np.ndarray, b: np.ndarray, users: np.ndarray, mask: np.ndarray, rounds: int,
                      seed: int) -> dict:
    """HitRate@10 of ``a`` minus ``b`` on the same events, with a 95% interval from resampling users."""
    diff = ((a > 0).astype(np.float64) - (b > 0))[mask]
    users = users[mask]
    unique, index = np.unique(users, return_inverse=True)
    per_user = np.stack([np.bincount(index, weights=diff, minlength=len(unique)),
                         np.bincount(index, minlength=len(unique)).astype(np.float64)])
    draws = np.random.default_rng(seed).integers(0, len(unique), (rounds, len(unique)))
    totals = per_user[:, draws].sum(axis=2)
    return {"difference": round(float(diff.mean()), 4),
            "ci95": [round(float(x), 4) for x in np.percentile(totals[0] / totals[1], [2.5, 97.5])]}


def refresh(run: str, repo: str, log_dir: str, work: str, epochs: int) -> dict:
    """Warm-start refresh on the served arm's event log, exported into its repository."""
    import dataclasses

    from tworec.beam.config import DataConfig, SplitConfig
    from tworec.beam.pipeline import run as run_data
    from tworec.export.repository import export_repository
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.train import train_ranker
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.train import train_retrieval

    started = time.perf_counter()
    data = os.path.join(work, "data")
    # No held-out items in a production refresh, and nearly everything in train: the point is
    # to learn from what was logged.
    run_data(DataConfig(dataset="events", input=log_dir, catalog=os.path.join(run, "data"),
                         split=SplitConfig(train_fraction=0.97, valid_fraction=0.02, cold_item_fraction=0.0)), data)
    previous = RetrievalArtifact.load(os.path.join(run, "retrieval"))
    config = dataclasses.replace(previous.config, epochs=epochs, min_steps_before_stopping=0)
    train_retrieval(data, os.path.join(work, "retrieval"), config, verbose=0,
                    warm_start=os.path.join(run, "retrieval"))
    ranker = RankerArtifact.load(os.path.join(run, "ranker"))
    train_ranker(data, os.path.join(work, "retrieval"), os.path.join(work, "ranker"),
                 dataclasses.replace(ranker.config, epochs=epochs), verbose=0, warm_start=os.path.join(run, "ranker"))
    entry = export_repository(os.path.join(work, "retrieval"), os.path.join(work, "ranker"), repo)
    return {"version": entry["version"], "seconds": round(time.perf_counter() - started, 1)}


def run_arm(arm: str, run: str, before, valid, test, segments, users, args, control=None) -> dict:
    """One arm's replay; ``control``: (valid, test) events to record in place of the real ones."""
    from tworec.live.config import LiveConfig
    from tworec.live.exploration import ExplorationConfig
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.serving.server import Service

    work = tempfile.mkdtemp(prefix=f"replay-{arm}-")
    repo = os.path.join(work, "repo")
    shutil.copytree(os.path.join(run, "repo"), repo, ignore=shutil.ignore_patterns("events"))
    trending = arm in ("live_trending", "refreshed")
    config = ServeConfig(repo=repo, reload_poll_s=0.5, live=LiveConfig(replica=arm, trending=trending),
                         exploration=ExplorationConfig(enabled=False))
    result = {"arm": arm}
    try:
        with Service(config) as service, RecommenderClient(service.address, timeout_s=30) as client:
            from tworec.contract import Event, EventType

            # The batch history every arm starts from: the training data's users, not counted as live.
            history = [Event(f"h{i}", e["user_id"], e["item_id"], EventType.RATING, e["timestamp"])
                       for i, e in enumerate(before)]
            service.recorder.state.record(history, [False] * len(history))
            if arm != "frozen":
                result["ingest_events_per_s"] = round(record(client, pb, control[0] if control else valid, "valid"), 1)
            on_half = None
            if arm == "refreshed":
                def on_half():
                    done = refresh(run, repo, config.event_log, os.path.join(work, "refresh"), args.refresh_epochs)
                    deadline = time.monotonic() + 600
                    while service.bundle.version != done["version"] and time.monotonic() < deadline:
                        time.sleep(0.2)
                    done["reloaded"] = service.bundle.version == done["version"]
                    result["refresh"] = done
            started = time.perf_counter()
            ranks = stream(client, pb, test, arm != "frozen", on_half, control[1] if control else None)
            result["stream_seconds"] = round(time.perf_counter() - started, 1)
            result["degraded"] = service.recommender.counters["degraded"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["ranks"] = ranks
    result["segments"] = {s: bootstrap(ranks, users, segments[s], args.bootstrap, args.seed) for s in SEGMENTS}
    print(f"{arm}{' (control)' if control else ''}: " + ", ".join(
        f"{s} HR@10 {v['hitrate@10']:.4f} [{v['ci95_hitrate@10'][0]:.4f}, {v['ci95_hitrate@10'][1]:.4f}]"
        for s, v in result["segments"].items()), flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run folder of tworec pipeline (data/, retrieval/, ranker/, repo/)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--no-control", action="store_true", help="skip the shuffled-timestamps control")
    parser.add_argument("--limit", type=int, default=0, help="replay only the first N test events (0: all)")
    parser.add_argument("--refresh-epochs", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", help="also write each arm's per-event ranks (0: not in the top 10) to this .npz")
    args = parser.parse_args(argv)

    from tworec.evaluation.artifact import EvalResults

    before, valid, test, catalog = load_events(os.path.join(args.run, "data"))
    if args.limit:
        test = test[:args.limit]
    users = np.array([e["user_id"] for e in test])
    segments = segments_of(catalog, [e["item_id"] for e in test])
    stats = json.load(open(os.path.join(args.run, "data", "stats.json")))
    out = {"dataset": stats["dataset"], "run": os.path.abspath(args.run), "test_events": len(test), "arms": {},
           "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    ranks = {}
    for arm in args.arms:
        result = run_arm(arm, args.run, before, valid, test, segments, users, args)
        ranks[arm] = result.pop("ranks")
        out["arms"][arm] = result.pop("segments")
        out.setdefault("details", {})[arm] = result
    out["ingest_events_per_s"] = max((d.get("ingest_events_per_s", 0) for d in out["details"].values()), default=0)
    pairs = [("live", "frozen"), ("live_trending", "live"), ("refreshed", "live"), ("refreshed", "live_trending")]
    out["differences"] = {f"{a}-{b}": {s: paired_difference(ranks[a], ranks[b], users, segments[s], args.bootstrap,
                                                             args.seed) for s in SEGMENTS}
                          for a, b in pairs if a in ranks and b in ranks}
    if "live" in ranks and "frozen" in ranks:
        # Live state changes only the answers of users with events since the cutoff: where the difference comes from.
        masks = live_history_masks(before, valid, test)
        out["live-frozen_by_history"] = {
            name: {"events": int(mask.sum()),
                   **paired_difference(ranks["live"], ranks["frozen"], users, mask, args.bootstrap, args.seed)}
            for name, mask in masks.items() if mask.any()}
    metrics = EvalResults.load(os.path.join(args.run, "eval")).metrics["temporal"]
    out["eval_two_stage"] = {m: {s: round(v["hitrate@10"], 4) for s, v in metrics[m].items()}
                             for m in ("two_stage", "two_stage_trending") if m in metrics}
    if not args.no_control:
        rng = np.random.default_rng(args.seed)

        def items_shuffled(events):
            items = rng.permutation([e["item_id"] for e in events])
            # "seq": a shuffled item can repeat a (user, item, time), which must stay two events
            return [{**e, "item_id": str(i), "seq": n} for n, (e, i) in enumerate(zip(events, items))]

        recorded = (items_shuffled(valid), items_shuffled(test))
        control = {"what": "recorded events' items shuffled among the events; requests and targets real"}
        for arm in ("frozen", "live", "live_trending"):
            result = run_arm(arm, args.run, before, valid, test, segments, users, args, recorded)
            ranks[f"control_{arm}"] = result.pop("ranks")
            control[arm] = result.pop("segments")
        control["differences"] = {
            f"{a}-{b}": paired_difference(ranks[f"control_{a}"], ranks[f"control_{b}"], users, segments["all"],
                                          args.bootstrap, args.seed)
            for a, b in (("live", "frozen"), ("live_trending", "live"))}
        out["control_shuffled"] = control
    with open(args.out, "w") as handle:
        json.dump(out, handle, indent=2)
    if args.ranks:
        np.savez_compressed(args.ranks, users=users, items=np.array([e["item_id"] for e in test]),
                            timestamps=np.array([e["timestamp"] for e in test]), **ranks)
    print(json.dumps({k: v for k, v in out.items() if k in ("arms", "differences", "live-frozen_by_history",
                                                            "eval_two_stage")}, indent=1))
    return out


if __name__ == "__main__":
    exit_on_sigterm()
    main()
