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


def run_demo(repo: str, out=print) -> int:
    from tworec.export.artifact import DeploymentRepository

    data_dir = DeploymentRepository(repo).data_folder()
    with Service(ServeConfig(repo=repo)) as service, RecommenderClient(service.address, timeout_s=5.0) as client:
        out(f"gateway on {service.address} (Triton on {service.models.address}); health: {client.health()}")
        user, history = _recent_items_of_a_user(data_dir)
        titles = service.bundle.items
        if user:
            out("\n" + format_table(client.recommend(user, history, k=10),
                                    f"known user {user}, recent: " + "; ".join(
                                        titles.titles[titles.row_of[i]][:30] for i in history[:3] if i in titles.row_of)))
        fresh = history[:2] if history else list(service.bundle.popular[:2])
        out("\n" + format_table(client.recommend("visitor-without-account", fresh, k=10),
                                "unknown user, fresh history: " + ", ".join(fresh)))
        out("\n" + format_table(client.recommend("visitor-without-account", [], k=10),
                                "unknown user, no history (popularity / cold-start blend)"))
        new_item = {"item_id": "demo-new-item", "title": "A field guide to comets, telescopes and the night sky",
                    "description": "Stargazing for beginners: planets, galaxies, orbits and space missions.",
                    "categories": ["Space"]}
        reply = client.upsert_items([new_item])
        out(f"\nupserted {new_item['item_id']!r} from its text → index size {reply.index_size:,}")
        similar = client.similar_items(item_id=new_item["item_id"], k=5)
        out(format_table(similar, "items most similar to the new one"))
        neighbours = [i.item_id for i in similar.items[:3]]
        response = client.recommend("visitor-without-account", neighbours, k=50)
        position = next((n + 1 for n, i in enumerate(response.items) if i.item_id == new_item["item_id"]), None)
        out("\n" + format_table(type(response)(items=response.items[:10], model_version=response.model_version,
                                               degraded=response.degraded),
                                f"unknown user whose recent items are the new item's neighbours {neighbours}"))
        out(f"the new item is at position {position} of 50" if position else
            "the new item is not in this user's top 50 (it is in the index: see SimilarItems above)")
        out(f"\ncounters: {service.recommender.counters.snapshot()}")
    out("services stopped")
    return 0
