"""Live state: what the gateway knows of users and items from the events recorded since training.

Per user: the items they had (clicks, add-to-carts, purchases, ratings), newest first; the newest
``history_length`` are their history for the query tower, the newest ``seen_items`` are never
recommended to them again. Per item: a decayed interaction count (live/decay.py), the items with
the highest counts (trending), its share of all items' decayed count (the live-count feature),
and its impressions and clicks (the exploration slot's posteriors). Per event id: whether it was
applied (a re-sent event is applied once).

Two stores behind one interface (``LiveState``): ``EmbeddedState`` in the gateway's memory,
rebuilt from the replica's event log at start, and ``RedisState``, which several gateway replicas
share. ``open_state`` picks one from ``LiveConfig.state``.
"""
from __future__ import annotations

import bisect
import collections
import threading
from abc import ABC, abstractmethod

import numpy as np

from tworec.live.config import LiveConfig
from tworec.contract import INTERACTION_TYPES, Event, EventType
from tworec.live import decay


class LiveState(ABC):
    def __init__(self, config: LiveConfig, half_life_s: float):
        """``half_life_s``: of the decayed counts, the served model's (its features were trained with it)."""
        self.config = config
        self.half_life_s = half_life_s

    @abstractmethod
    def claim(self, event_ids: list) -> list:
        """For each id, whether it is new (and now claimed); False: already applied."""

    @abstractmethod
    def release(self, event_ids: list) -> None:
        """Forgets claims whose events could not be recorded, so a re-send is accepted."""

    @abstractmethod
    def record(self, events: list, counted: list) -> None:
        """Applies claimed ``events``: interactions join their user's items; those whose item
        ``counted`` marks (the item exists in the catalog) count toward trending."""

    @abstractmethod
    def user(self, user_id: str) -> list:
        """The user's items as [(item id, timestamp)], newest first, at most ``seen_items``."""

    @abstractmethod
    def trending(self, now: float, k: int) -> list:
        """The ``k`` items with the highest decayed counts at ``now``: [(item id, count)]."""

    @abstractmethod
    def shares(self, item_ids: list) -> np.ndarray:
        """Each item's decayed count over that of every counted interaction (live/decay.py share;
        the same at any time; 0 for items never counted)."""

    @abstractmethod
    def exposure(self, item_ids: list) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) of ``item_ids`` since the state began (0 for items never shown)."""

    def close(self) -> None:
        pass

    @staticmethod
    def interactions(events: list, counted: list):
        """(interactions, those whose item counts toward trending)."""
        kept = [(e, c) for e, c in zip(events, counted) if e.type in INTERACTION_TYPES]
        return [e for e, _ in kept], [e for e, c in kept if c]

    @staticmethod
    def exposures(events: list, counted: list):
        """(items with an impression, items with a click), one entry per event, counted items only."""
        shown = [e.item_id for e, c in zip(events, counted) if c and e.type is EventType.IMPRESSION]
        clicked = [e.item_id for e, c in zip(events, counted) if c and e.type is EventType.CLICK]
        return shown, clicked


class EmbeddedState(LiveState):
    """Everything in this process's memory, guarded by one lock."""

    def __init__(self, config: LiveConfig, half_life_s: float):
        super().__init__(config, half_life_s)
        self._lock = threading.Lock()
        self._users: dict = {}  # user → ([(-timestamp, item)] sorted, {item: timestamp})
        self._counts: dict = {}  # item → stored (log2 forward) value, live/decay.py
        self._total = decay.EMPTY  # the stored value of every counted interaction
        self._top: dict = {}  # the trending_candidates items with the highest counts
        self._ranked: list | None = None  # _top's items, highest first; None: re-sort
        self._claimed: dict = {}  # event id → None, insertion-ordered (oldest evicted first)
        self._impressions: collections.Counter = collections.Counter()
        self._clicks: collections.Counter = collections.Counter()

    def claim(self, event_ids: list) -> list:
        with self._lock:
            fresh = []
            for event_id in event_ids:
                new = event_id not in self._claimed
                if new:
                    self._claimed[event_id] = None
                fresh.append(new)
            while len(self._claimed) > self.config.dedup_ids:
                del self._claimed[next(iter(self._claimed))]
            return fresh

    def release(self, event_ids: list) -> None:
        with self._lock:
            for event_id in event_ids:
                self._claimed.pop(event_id, None)

    def record(self, events: list, counted: list) -> None:
        interactions, trending = self.interactions(events, counted)
        shown, clicked = self.exposures(events, counted)
        half_life = self.half_life_s
        with self._lock:
            for e in interactions:
                self._add_item(e.user_id, e.item_id, e.timestamp)
            for e in trending:
                weight = float(decay.log_weight(e.timestamp, half_life))
                self._count(e.item_id, weight)
                self._total = float(decay.log_add(self._total, weight))
            self._impressions.update(shown)
            self._clicks.update(clicked)

    def _add_item(self, user: str, item: str, timestamp: int) -> None:
        order, latest = self._users.setdefault(user, ([], {}))
        previous = latest.get(item)
        if previous is not None:
            if previous >= timestamp:
                return
            order.pop(bisect.bisect_left(order, (-previous, item)))
        bisect.insort(order, (-timestamp, item))
        latest[item] = timestamp
        while len(order) > self.config.seen_items:
            _, dropped = order.pop()
            del latest[dropped]

    def _count(self, item: str, log_weight: float) -> None:
        total = float(decay.log_add(self._counts.get(item, decay.EMPTY), log_weight))
        self._counts[item] = total
        top, size = self._top, self.config.trending_candidates
        if item in top or len(top) < size:
            top[item] = total
            self._ranked = None
        elif total > min(top.values()):
            del top[min(top, key=top.get)]
            top[item] = total
            self._ranked = None

    def user(self, user_id: str) -> list:
        with self._lock:
            order, _ = self._users.get(user_id, ([], {}))
            return [(item, -negative) for negative, item in order]

    def trending(self, now: float, k: int) -> list:
        with self._lock:
            if self._ranked is None:  # sorted once per change of the top, not per request
                self._ranked = sorted(self._top.items(), key=lambda kv: (-kv[1], kv[0]))
            best = self._ranked[:k]
        counts = decay.decayed([total for _, total in best], now, self.half_life_s).tolist()
        return [(item, count) for (item, _), count in zip(best, counts)]

    def shares(self, item_ids: list) -> np.ndarray:
        counted, empty = self._counts.get, decay.EMPTY
        with self._lock:
            stored, total = [counted(i, empty) for i in item_ids], self._total
        return decay.share(stored, total)

    def exposure(self, item_ids: list) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            shown, clicked = self._impressions.get, self._clicks.get  # a Counter's [] is slower on misses
            return (np.array([shown(i, 0) for i in item_ids], np.float64),
                    np.array([clicked(i, 0) for i in item_ids], np.float64))


class RedisState(LiveState):
    """The same state in Redis, shared by every gateway replica pointed at it.

    Keys (all under ``redis_prefix``): ``:user:<id>`` a sorted set item → timestamp (the newest
    ``seen_items`` kept), ``:trending`` a sorted set item → stored value (live/decay.py; a Lua
    script log-adds, atomically), ``:trending_total`` the stored value of every counted
    interaction, ``:exposure`` a hash of each item's impressions (``i:<id>``) and
    clicks (``c:<id>``), ``:event:<id>`` a claimed event id (expires after ``dedup_ttl_s``)."""

    # KEYS[1]: the trending set, KEYS[2]: the total; ARGV: item, log weight, item, log weight, ...
    # → each log-added to its item and to the total.
    _LOG_ADD = """
    local function log_add(current, add)
      if not current then return add end
      local high, low = math.max(current, add), math.min(current, add)
      return high + math.log(1 + 2 ^ (low - high)) / math.log(2)
    end
    local total = tonumber(redis.call('GET', KEYS[2]))
    for i = 1, #ARGV, 2 do
      local add = tonumber(ARGV[i + 1])
      redis.call('ZADD', KEYS[1], log_add(tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])), add), ARGV[i])
      total = log_add(total, add)
    end
    redis.call('SET', KEYS[2], string.format('%.17g', total))
    return #ARGV / 2
    """

    def __init__(self, config: LiveConfig, half_life_s: float, url: str):
        import redis

        super().__init__(config, half_life_s)
        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._redis.ping()  # fail at start, not at the first request
        prefix = config.redis_prefix
        self._user_key = lambda u: f"{prefix}:user:{u}"  # noqa: E731
        self._event_key = lambda e: f"{prefix}:event:{e}"  # noqa: E731
        self._trending_key = f"{prefix}:trending"
        self._total_key = f"{prefix}:trending_total"
        self._exposure_key = f"{prefix}:exposure"
        self._log_add = self._redis.register_script(self._LOG_ADD)

    def claim(self, event_ids: list) -> list:
        pipe = self._redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self._event_key(event_id), 1, nx=True, ex=self.config.dedup_ttl_s)
        return [bool(ok) for ok in pipe.execute()]

    def release(self, event_ids: list) -> None:
        if event_ids:
            self._redis.delete(*[self._event_key(e) for e in event_ids])

    def record(self, events: list, counted: list) -> None:
        interactions, trending = self.interactions(events, counted)
        shown, clicked = self.exposures(events, counted)
        if not interactions and not shown:
            return
        pipe = self._redis.pipeline(transaction=True)
        for prefix, items in (("i", shown), ("c", clicked)):
            for item, n in collections.Counter(items).items():
                pipe.hincrby(self._exposure_key, f"{prefix}:{item}", n)
        for e in interactions:
            pipe.zadd(self._user_key(e.user_id), {e.item_id: e.timestamp}, gt=True)
        for user in {e.user_id for e in interactions}:  # keep the newest seen_items
            pipe.zremrangebyrank(self._user_key(user), 0, -self.config.seen_items - 1)
        if trending:
            half_life = self.half_life_s
            self._log_add(keys=[self._trending_key, self._total_key], client=pipe,
                          args=[x for e in trending for x in (e.item_id, repr(float(decay.log_weight(e.timestamp,
                                                                                                      half_life))))])
        pipe.execute()

    def user(self, user_id: str) -> list:
        rows = self._redis.zrevrange(self._user_key(user_id), 0, self.config.seen_items - 1, withscores=True)
        return [(item.decode(), int(timestamp)) for item, timestamp in rows]

    def trending(self, now: float, k: int) -> list:
        rows = self._redis.zrevrange(self._trending_key, 0, k - 1, withscores=True)
        counts = decay.decayed([total for _, total in rows], now, self.half_life_s).tolist()
        return [(item.decode(), count) for (item, _), count in zip(rows, counts)]

    def shares(self, item_ids: list) -> np.ndarray:
        if not item_ids:
            return np.zeros(0)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zmscore(self._trending_key, list(item_ids))
        pipe.get(self._total_key)
        stored, total = pipe.execute()
        return decay.share(np.array([decay.EMPTY if s is None else s for s in stored], np.float64),
                           decay.EMPTY if total is None else float(total))

    def exposure(self, item_ids: list) -> tuple[np.ndarray, np.ndarray]:
        if not item_ids:
            return np.zeros(0), np.zeros(0)
        values = self._redis.hmget(self._exposure_key, [f"i:{i}" for i in item_ids] + [f"c:{i}" for i in item_ids])
        counts = np.array([float(v or 0) for v in values])
        return counts[:len(item_ids)], counts[len(item_ids):]

    def close(self) -> None:
        self._redis.close()


def open_state(config: LiveConfig, half_life_s: float) -> LiveState:
    """The store ``config.state`` names: "embedded" or a redis:// URL."""
    from tworec.errors import UserError

    if config.state == "embedded":
        return EmbeddedState(config, half_life_s)
    if config.state.startswith(("redis://", "rediss://", "unix://")):
        try:
            return RedisState(config, half_life_s, config.state)
        except Exception as err:  # noqa: BLE001 - any connection failure: one line at start
            raise UserError(f"cannot reach the live state store {config.state}: {err}") from None
    raise UserError(f"--state must be embedded or a redis:// URL, not {config.state!r}")
