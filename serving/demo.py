"""``tworec demo --repo DIR``: start the services, make real gRPC calls, print them, shut down.

Calls: a known user with their last items; an unknown user with a fresh history; a brand-new
item upserted from its text, then found by SimilarItems and by Recommend for a user whose recent
items are its neighbours; the health service.
"""
from __future__ import annotations

from tworec.serving.client import RecommenderClient, format_table
from tworec.serving.server import ServeConfig, Service


def _recent_items_of_a_user(data_dir: str, n: int = 5):
    """A user from the test period with their history at that moment (most recent first)."""
    from tworec import contract, example_codec
    from tworec.layout import DataLayout
    from tworec.tfrecord_io import iter_records
    import glob

    for path in sorted(glob.glob(DataLayout(data_dir).split_pattern(contract.Split.TEST))):
        for record in iter_records(path):
            r = example_codec.decode(contract.INTERACTION_FEATURES, record)
            # A history may repeat an item (a re-read, a re-watch); the API takes each item once.
            recent = list(dict.fromkeys(r["history_item_ids"]))
            if len(recent) >= n:
                return r["user_id"], recent[:n]
    return None, []


def _fans_of(data_dir: str, bundle, category: str, n: int) -> list:
    """Users of the test period whose history is most in ``category``, most devoted first."""
    import glob

    from tworec import contract, example_codec
    from tworec.layout import DataLayout
    from tworec.tfrecord_io import iter_records

    row = bundle.categories.get(category)
    if row is None:
        return []
    in_category = {item for item, r in bundle.items.row_of.items() if row in bundle.items.tables.item_category_rows[r]}
    share = {}
    for path in sorted(glob.glob(DataLayout(data_dir).split_pattern(contract.Split.TEST))):
        for record in iter_records(path):
            r = example_codec.decode(contract.INTERACTION_FEATURES, record)
            if len(r["history_item_ids"]) >= 5:
                share[r["user_id"]] = sum(h in in_category for h in r["history_item_ids"]) / len(r["history_item_ids"])
    return sorted(share, key=lambda u: (-share[u], u))[:n]


def run_demo(repo: str, out=print) -> int:
    import tempfile
    import time

    from tworec.export.artifact import DeploymentRepository
    from tworec.live.config import LiveConfig
    from tworec.serving.client import pb

    data_dir = DeploymentRepository(repo).data_folder()
    events = tempfile.mkdtemp(prefix="tworec-demo-events-")  # a fresh event log: every demo starts clean
    config = ServeConfig(repo=repo, live=LiveConfig(event_log=events, replica="demo"))
    with Service(config) as service, RecommenderClient(service.address, timeout_s=5.0) as client:
        out(f"gateway on {service.address} (Triton on {service.models.address}); health: {client.health()}")
        user, history = _recent_items_of_a_user(data_dir)
        titles = service.bundle.items
        if user:
            out("\n" + format_table(client.recommend(user, history, k=10),
                                    f"known user {user}, recent: " + "; ".join(
                                        titles.titles[titles.row_of[i]][:30] for i in history[:3] if i in titles.row_of)))
        out("\n" + format_table(client.recommend("visitor-without-account", [], k=10),
                                "unknown user, no history (popularity / cold-start blend)"))
        now = int(time.time())
        fresh = history[:3] if history else list(service.bundle.popular[:3])
        client.stub.RecordEvents(pb.RecordEventsRequest(events=[
            pb.Event(event_id=f"demo-visit-{j}", user_id="visitor-without-account", item_id=item, type=pb.CLICK,
                     timestamp=now - 60 + j) for j, item in enumerate(fresh)]), timeout=5)
        out("\n" + format_table(client.recommend("visitor-without-account", [], k=10),
                                f"the same visitor after RecordEvents of 3 clicks ({', '.join(fresh)}), no history "
                                "in the request"))

        new_item = {"item_id": "demo-new-item", "title": "A field guide to comets, telescopes and the night sky",
                    "description": "Stargazing for beginners: planets, galaxies, orbits and space missions.",
                    "categories": ["Space"]}
        reply = client.upsert_items([new_item])
        out(f"\nupserted {new_item['item_id']!r} from its text → index size {reply.index_size:,}")
        out(format_table(client.similar_items(item_id=new_item["item_id"], k=5), "items most similar to the new one"))
        fans = _fans_of(data_dir, service.bundle, "Space", 25)
        if len(fans) >= 2:
            reader, clickers = fans[0], fans[1:]

            def position():
                answer = client.recommend(reader, k=50)
                return next((n + 1 for n, i in enumerate(answer.items) if i.item_id == new_item["item_id"]), None), answer

            before, _ = position()
            client.stub.RecordEvents(pb.RecordEventsRequest(events=[
                pb.Event(event_id=f"demo-fan-{j}", user_id=fan, item_id=new_item["item_id"], type=pb.CLICK,
                         timestamp=now - 30 + j) for j, fan in enumerate(clickers)]), timeout=5)
            after, answer = position()
            where = lambda p: f"position {p} of 50" if p else "not in the top 50"  # noqa: E731
            out(f"\n{len(clickers)} readers of Space items click the new item (RecordEvents); for another one, "
                f"{reader}, Recommend with no history in the request puts it at {where(after)} (before the clicks: "
                f"{where(before)})")
            out(format_table(type(answer)(items=answer.items[:10], model_version=answer.model_version,
                                          degraded=answer.degraded, request_id=answer.request_id),
                             f"{reader} after the clicks"))
        out(f"\ncounters: {service.recommender.counters.snapshot()}; events: {dict(service.recorder.counters)}")
    out("services stopped")
    return 0
