"""A small client for the gateway, for backend services and the ``tworec recommend`` command."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tworec.serving import protos

pb, pb_grpc = protos.load()


def stage_name(stage: int) -> str:
    """The proto's Stage as the table shows it (COLD_START → "cold-start")."""
    return pb.Stage.Name(stage).lower().replace("_", "-") if stage in pb.Stage.values() and stage else "?"


class RecommenderClient:
    """``token``: a bearer token when the gateway checks them; ``root_certificates`` (PEM bytes)
    for TLS, plus ``private_key``/``certificate_chain`` for mutual TLS."""

    def __init__(self, address: str, timeout_s: float = 2.0, channel: grpc.Channel | None = None,
                 token: str | None = None, root_certificates: bytes | None = None,
                 private_key: bytes | None = None, certificate_chain: bytes | None = None):
        if channel is None and root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            channel = grpc.secure_channel(address, credentials)
        self.channel = channel or grpc.insecure_channel(address)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.timeout_s = timeout_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def recommend(self, user_id: str = "", recent_item_ids=(), k: int = 10, exclude_item_ids=(),
                  context: dict | None = None, recent_timestamps=(), timeout_s: float | None = None):
        request = pb.RecommendRequest(user_id=user_id, recent_item_ids=list(recent_item_ids), k=k,
                                      exclude_item_ids=list(exclude_item_ids), context=context or {},
                                      recent_timestamps=list(recent_timestamps))
        return self.stub.Recommend(request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)

    def similar_items(self, item_id: str | None = None, text: str | None = None, k: int = 10):
        request = pb.SimilarItemsRequest(k=k, **({"item_id": item_id} if item_id is not None else {"text": text}))
        return self.stub.SimilarItems(request, timeout=self.timeout_s, metadata=self.metadata)

    def search(self, query: str, user_id: str = "", recent_item_ids=(), k: int = 10, categories=(),
               exclude_item_ids=(), context=None):
        request = pb.SearchRequest(query=query, user_id=user_id, recent_item_ids=list(recent_item_ids), k=k,
                                   categories=list(categories), exclude_item_ids=list(exclude_item_ids),
                                   context=context or {})
        return self.stub.Search(request, timeout=self.timeout_s, metadata=self.metadata)

    def upsert_items(self, items):
        """``items``: dicts with item_id, title, description, categories."""
        return self.stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(**i) for i in items]),
                                     timeout=max(self.timeout_s, 30.0), metadata=self.metadata)

    def remove_items(self, item_ids):
        return self.stub.RemoveItems(pb.RemoveItemsRequest(item_ids=list(item_ids)), timeout=self.timeout_s,
                                     metadata=self.metadata)

    def health(self, service: str = "") -> str:
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_table(response, title: str = "") -> str:
    rows = [(str(i + 1), it.item_id, f"{it.score:.4f}", stage_name(it.stage), "yes" if it.cold else "",
             (it.title[:60] + "…") if len(it.title) > 60 else it.title) for i, it in enumerate(response.items)]
    header = ("#", "item", "score", "stage", "cold", "title")
    widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [title] if title else []
    flags = [f"version {response.model_version}"]
    if getattr(response, "degraded", False):
        flags.append("DEGRADED: ranker unavailable, retrieval order")
    out += [" · ".join(flags), line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out)
