"""Typed configuration of the gateway's live loop (a section of ``tworec serve``'s settings)."""
from __future__ import annotations

import socket
from dataclasses import dataclass

from tworec import contract
from tworec.settings import setting


@dataclass(frozen=True)
class LiveConfig:
    state: str = setting("embedded", "where live user state and trending live: embedded (in this process, rebuilt "
                                      "from its event log at start) or redis://HOST:PORT[/DB] (shared by replicas)")
    event_log: str | None = setting(None, "event log folder (default: REPO/events); each replica writes its own "
                                       "subfolder")
    replica: str = setting(socket.gethostname(), "this gateway's name: its event log subfolder (keep it stable "
                                                 "across restarts, e.g. a StatefulSet pod name)")
    history_length: int = setting(contract.HISTORY_LENGTH, "recent items kept per user for the query tower")
    seen_items: int = setting(1000, "items remembered per user so answers never repeat what the user already had")
    trending: bool = setting(True, "score the most-trending items beside the ScaNN search and add the model's live-count "
                                   "term to retrieval scores (the ranker reads live counts either way)")
    trending_candidates: int = setting(100, "most-trending items scored exactly beside the ScaNN search, so a "
                                            "surging item can enter the candidates")
    dedup_ids: int = setting(1_000_000, "recent event ids remembered to apply a re-sent event once")
    dedup_ttl_s: int = setting(7 * 86_400, "with Redis: how long an event id is remembered")
    max_future_s: int = setting(300, "events stamped further ahead of the server's clock are refused")
    segment_max_bytes: int = setting(64 << 20, "an event log segment is closed past this size")
    segment_max_s: float = setting(3600.0, "and past this age")
    redis_prefix: str = setting("tworec", "prefix of every Redis key, so deployments can share a Redis")
