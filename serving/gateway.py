"""The gateway's gRPC service: Recommend, SimilarItems, UpsertItems, RemoveItems, RecordEvents.

Recommend = the user's state (their recorded items merged with the request's) → query tower (in
process) → ScaNN top N → the ranker in Triton → top k, with a request id the events of its items
carry back. RecordEvents = check → claim → the durable event log → live state (live/recorder.py);
UpsertItems and RemoveItems are logged durably too, so a restart applies them again. When Triton
cannot answer within the ranker's budget (or the request's deadline), the answer is the retrieval
order and the response is marked degraded (``counters["degraded"]`` counts them). Status codes:
INVALID_ARGUMENT for malformed requests, NOT_FOUND only for a specific unknown item the caller
named, UNAVAILABLE when a dependency needed for the answer is down, DEADLINE_EXCEEDED when the
caller's deadline passed before an answer.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from tworec import contract
from tworec.contract import Event, EventReject, EventType
from tworec.live import decay, exploration
from tworec.live.exploration import ExplorationConfig
from tworec.live.recorder import EventRecorder
from tworec.ranking.features import ranker_rows
from tworec.search.engine import UserScores
from tworec.serving import protos
from tworec.serving.bundle import Bundle
from tworec.serving.config import GatewayConfig
from tworec.serving.triton_models import ModelUnavailable, TritonModels
from tworec.serving.validation import InvalidRequest, check_id, check_ids, check_k, check_recommend, check_search, \
    check_text, \
    check_upsert, MAX_REMOVE_ITEMS

log = logging.getLogger("tworec.gateway")
pb, pb_grpc = protos.load()


class Counters:
    def __init__(self):
        self._lock = threading.Lock()
        self._values = collections.Counter()

    def add(self, name: str, n: int = 1):
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, name: str) -> int:
        return self.snapshot().get(name, 0)


class StageTimings:
    """Seconds spent in each stage of Recommend, summed over requests, and the request count;
    thread-safe (the gateway's worker threads all add to it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds = collections.Counter()

    def add(self, **seconds: float):
        with self._lock:
            self._seconds.update(seconds)
            self._seconds["count"] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._seconds)


@dataclass
class UserState:
    """What a Recommend request knows of its user: the user's model row (0: unknown), recent
    items as catalog rows with their times (most recent first), the items never to return, now."""

    user_row: int
    history: list  # catalog rows
    history_ts: list
    excluded: set  # item ids
    now: int
    attributes: dict

    @property
    def has_signal(self) -> bool:
        return self.user_row > 0 or bool(self.history)


@dataclass
class Candidates:
    """Retrieval's answer: the query vector and the candidates' ids, retrieval scores (best first)
    and item_live_count features."""

    query: np.ndarray
    ids: list
    scores: np.ndarray
    live: np.ndarray | None = None

    def content_score(self, item: str, live_weight: float) -> float:
        """``item``'s retrieval score without the live-count term: what the exploration slot's
        click prior was fitted on (towers/selection.py fit_click_prior)."""
        j = self.ids.index(item)
        score = float(self.scores[j])
        return score - live_weight * float(self.live[j]) if self.live is not None else score


class Recommender(pb_grpc.RecommenderServicer):
    def __init__(self, bundle_source, triton: TritonModels, config: GatewayConfig = GatewayConfig(),
                 recorder: EventRecorder | None = None, exploration: ExplorationConfig | None = None):
        """``bundle_source()`` → the current Bundle (it changes when a new version loads);
        ``recorder``: the event log and live state (None: no RecordEvents, no live state);
        ``exploration``: the exploration slot's settings (None, or a version without a click prior:
        no slot)."""
        self._bundle = bundle_source
        self.triton = triton
        self.config = config
        self.recorder = recorder
        self.exploration = exploration
        self._random = threading.local()  # each worker thread's generator for the slot's draws
        self.live_changes = LiveChanges()
        self.counters = Counters()
        self.timings = StageTimings()  # seconds per Recommend stage, for the load benchmark
        self._last_warning = 0.0

    # --- helpers ----------------------------------------------------------------------------------
    def _warn_degraded(self, err):
        """At most one log line per 10 s: a Triton outage must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning("ranker unavailable, answering from retrieval (degraded counter: %d): %s",
                        self.counters["degraded"], err)

    def _fail(self, context, code, message: str):
        self.counters.add(f"status_{code.name.lower()}")
        context.abort(code, message)

    @staticmethod
    def _remaining(context) -> float:
        remaining = context.time_remaining()
        return float("inf") if remaining is None else remaining

    def _items(self, bundle: Bundle, ids, scores, stage, retrieval_scores=None):
        table = bundle.items
        out = []
        for j, (item, score) in enumerate(zip(ids, scores)):
            r = table.row_of.get(item)
            out.append(pb.ScoredItem(
                item_id=item, score=float(score), stage=stage, propensity=1.0,
                retrieval_score=float(retrieval_scores[j]) if retrieval_scores is not None else 0.0,
                title=table.titles[r] if r is not None else "", cold=bool(table.cold[r]) if r is not None else False))
        return out

    # --- Recommend: parse → state → retrieve → rank or degrade → respond --------------------------
    def Recommend(self, request, context):
        started = time.perf_counter()
        self.counters.add("recommend")
        try:
            parsed = check_recommend(request)
        except InvalidRequest as err:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        bundle = self._bundle()
        request_id = secrets.token_hex(8)
        state = self._user_state(bundle, request, parsed)
        if not state.has_signal and self.config.unknown_visitors == "popularity":
            items = self._no_signal(bundle, request.k, state.excluded)
            return pb.RecommendResponse(items=items, model_version=str(bundle.version), known_user=False,
                                        request_id=request_id)
        t0 = time.perf_counter()
        query = bundle.query(state.user_row, state.history, state.history_ts, state.now)
        t1 = time.perf_counter()
        candidates = self._retrieve(bundle, state, query)
        t2 = time.perf_counter()
        ranked = self._rank(bundle, state, candidates, context)
        t3 = time.perf_counter()
        k = min(request.k, len(candidates.ids))
        if ranked is None:
            self.counters.add("degraded")
            items = self._items(bundle, candidates.ids[:k], candidates.scores[:k], pb.RETRIEVAL, candidates.scores[:k])
        else:
            order = np.argsort(-ranked, kind="stable")[:k]
            items = self._items(bundle, [candidates.ids[j] for j in order], ranked[order], pb.RANKER,
                                candidates.scores[order])
        items = self._with_exploration(bundle, state, candidates, items, request.user_id, request_id)
        response = pb.RecommendResponse(items=items, degraded=ranked is None, model_version=str(bundle.version),
                                        known_user=state.user_row > 0, request_id=request_id)
        self.timings.add(query_tower=t1 - t0, scann=t2 - t1, triton=t3 - t2, total=time.perf_counter() - started)
        return response

    def _user_state(self, bundle: Bundle, request, parsed: dict) -> UserState:
        """The user's items: the request's recent ones merged with those recorded for the user
        (deduplicated, newest first, at most the model's history length), as the bundle knows them.
        Unknown and removed items leave the history but stay excluded from the answer, and so does
        everything the user is recorded to have had."""
        now = parsed["now"] or int(time.time())
        items = {}  # item → its newest timestamp
        for j, item in enumerate(request.recent_item_ids):
            items[item] = request.recent_timestamps[j] if j < len(request.recent_timestamps) else now
        if self.recorder is not None and request.user_id:
            for item, timestamp in self.recorder.state.user(request.user_id):
                if timestamp > items.get(item, -1):
                    items[item] = timestamp
        table = bundle.items
        history, history_ts = [], []
        for item, timestamp in sorted(items.items(), key=lambda kv: -kv[1]):
            r = table.row_of.get(item)
            if r is not None and item not in bundle.removed and len(history) < bundle.history_length:
                history.append(r)
                history_ts.append(timestamp)
        return UserState(bundle.user_rows.get(request.user_id, 0), history, history_ts,
                         set(items) | set(request.exclude_item_ids) | bundle.removed, now, parsed["attributes"])

    def _retrieve(self, bundle: Bundle, state: UserState, query: np.ndarray) -> Candidates:
        """The top ``candidates`` items for the query vector, excluded items left out: ScaNN's, and
        with trending on (``LiveConfig.trending``) the most-trending items scored exactly beside
        them and every score plus the model's live-count term; then each candidate's live count
        for the ranker (trending off: none)."""
        n = self.config.candidates
        ids, scores = bundle.search(query, n + len(state.excluded))
        keep = [j for j, item in enumerate(ids) if item not in state.excluded][:n]
        ids, scores = [ids[j] for j in keep], np.asarray(scores, np.float32)[keep]
        if self.recorder is None or not self.recorder.config.trending:
            return Candidates(query, ids, scores)
        live_state, weighted = self.recorder.state, bundle.live_weight > 0
        if weighted:
            found, table = set(ids), bundle.items
            extra = [item for item, _ in live_state.trending(state.now, self.recorder.config.trending_candidates)
                     if item not in found and item not in state.excluded and item in table.row_of]
            if extra:
                rows = np.array([table.row_of[i] for i in extra])
                ids = ids + extra
                scores = np.concatenate([scores, (table.item_embedding[rows] @ query
                                                  + bundle.score_shift(rows)).astype(np.float32)])
        live = decay.share_feature(live_state.shares(ids))
        if weighted:
            scores = scores + bundle.live_weight * live
            order = np.argsort(-scores, kind="stable")[:n]
            ids, scores, live = [ids[j] for j in order], scores[order], live[order]
        return Candidates(query, ids, scores, live)

    def _rank(self, bundle: Bundle, state: UserState, candidates: Candidates, context):
        """The ranker's scores for the candidates within its budget (capped by the caller's deadline), or None: degrade
        to retrieval order. Aborts DEADLINE_EXCEEDED when the deadline already passed."""
        remaining = self._remaining(context)
        budget = min(self.config.ranker_budget_s, remaining - self.config.deadline_margin_s)
        if budget <= 0:
            if remaining <= 0:
                self._fail(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed during retrieval")
            return None
        hours = (state.now - state.history_ts[0]) / 3600.0 if state.history else 0.0
        rows = self._ranker_rows(bundle, state.user_row, state.attributes, candidates.query, len(state.history),
                                 hours, candidates.ids, candidates.scores, candidates.live)
        try:
            return self.triton.rank(bundle.triton_versions[bundle.ranker_model], rows, budget)
        except ModelUnavailable as err:
            self._warn_degraded(err)
            return None

    def _with_exploration(self, bundle: Bundle, state: UserState, candidates: Candidates, items: list,
                          user_id: str, request_id: str) -> list:
        """``items`` with the exploration slot's choice at its position (live/exploration.py): a new
        or under-exposed item the user has not had, not removed, not excluded and not already in the
        answer, or, where the answer's last item (the one the slot would push out) wins the draw, the
        answer as it is; the decision goes to the event log for off-policy evaluation."""
        config = self.exploration
        if (config is None or not config.enabled or self.recorder is None or bundle.click_prior is None
                or len(items) <= config.position):
            return items
        ranking = bundle.exploration_ranking(candidates.query)
        if not len(ranking):
            return items
        table = bundle.items
        # The displaced item's prior from the same kind of score as the new items' (no live-count term).
        displaced = ((items[-1].item_id, candidates.content_score(items[-1].item_id, bundle.live_weight))
                     if config.displaced_competes else None)
        pool = exploration.candidate_pool(ranking, state.excluded | {i.item_id for i in items},
                                          self.recorder.state.exposure, bundle.click_prior, config, displaced)
        if not pool.new:
            return items
        if not hasattr(self._random, "generator"):
            self._random.generator = np.random.default_rng()
        choice = exploration.choose(pool, config, self._random.generator)
        position = len(items) - 1 if choice.keeps_answer else config.position
        self.recorder.log_decision({"request_id": request_id, "user_id": user_id, "at": state.now,
                                    "position": position, "policy": "thompson", "chosen": choice.item,
                                    "propensity": round(choice.propensity, 6), **choice.pool.record()})
        if choice.keeps_answer:
            items[-1].propensity = choice.propensity
            self.counters.add("exploration_kept")
            return items
        r, score = table.row_of[choice.item], float(pool.scores[choice.index])
        slot = pb.ScoredItem(item_id=choice.item, score=score, stage=pb.EXPLORATION, retrieval_score=score,
                             title=table.titles[r], cold=bool(table.cold[r]), propensity=choice.propensity)
        self.counters.add("exploration")
        return items[:config.position] + [slot] + items[config.position:-1]

    @staticmethod
    def _ranker_rows(bundle, user_row, attributes, query, history_count, hours, ids, scores, live=None) -> dict:
        """The request as ranker rows (tworec.contract.RANKER_INPUTS), one per candidate."""
        rows = np.array([bundle.items.row_of[i] for i in ids], np.int64)
        return ranker_rows(bundle.items.tables, np.int32(user_row), bundle.attribute_rows(user_row, attributes),
                           query, history_count, max(hours, 0.0), rows, scores, live)

    def _no_signal(self, bundle: Bundle, k: int, excluded: set):
        """No user and no history: popular items, with new items mixed in so they get seen."""
        self.counters.add("no_signal")
        table = bundle.items
        popular = [i for i in bundle.popular if i not in excluded]
        cold = [table.item_ids[r] for r in np.nonzero(table.cold)[0][::-1] if table.item_ids[r] not in excluded]
        n_cold = min(len(cold), int(round(k * self.config.cold_start_share)))
        picked = popular[: k - n_cold]
        out = self._items(bundle, picked, np.linspace(1.0, 0.5, len(picked)) if picked else [], pb.POPULARITY)
        fresh = self._items(bundle, cold[:n_cold + (k - n_cold - len(picked))], np.zeros(k), pb.COLD_START)
        merged, step = [], max(1, round(1 / self.config.cold_start_share)) if fresh else k + 1
        for item in out:
            merged.append(item)
            if fresh and len(merged) % step == step - 1:
                merged.append(fresh.pop(0))
        return (merged + fresh)[:k]

    # --- SimilarItems -----------------------------------------------------------------------------
    def SimilarItems(self, request, context):
        self.counters.add("similar_items")
        bundle = self._bundle()
        try:
            check_k(request.k)
            which = request.WhichOneof("query")
            if which is None:
                raise InvalidRequest("set item_id or text")
            if which == "item_id":
                check_id(request.item_id, "item_id")
            else:
                check_text(request.text, "text")
                if not request.text.strip():
                    raise InvalidRequest("text is empty")
        except InvalidRequest as err:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        engine = bundle.search_engine
        if which == "item_id":
            r = bundle.items.row_of.get(request.item_id)
            if r is None or request.item_id in bundle.removed:
                return self._fail(context, grpc.StatusCode.NOT_FOUND, f"item {request.item_id!r} is not in the index")
            if engine is not None and request.item_id in engine.row_of:
                ids, scores = self._similar_blend(bundle, request.item_id, request.k)
                return pb.SimilarItemsResponse(items=self._items(bundle, ids, scores, pb.RETRIEVAL),
                                               model_version=str(bundle.version))
            vector = bundle.items.item_embedding[r]
            skip = {request.item_id}
        elif engine is not None:  # a text: the fused legs, what it is like (no item prior)
            found = engine.candidates(request.text, bundle.text_encoder(request.text))
            order = np.argsort(-found.fused, kind="stable")[: request.k]
            return pb.SimilarItemsResponse(items=self._items(bundle, [found.ids[j] for j in order], found.fused[order],
                                                             pb.RETRIEVAL), model_version=str(bundle.version))
        else:
            try:
                vector = self._embed(bundle, [request.text], [""], [()], context)[0]
            except ModelUnavailable as err:
                return self._fail(context, grpc.StatusCode.UNAVAILABLE, f"item tower unavailable: {err}")
            skip = set()
        ids, scores = bundle.search(vector, request.k + len(skip), with_shift=False)
        pairs = [(i, s) for i, s in zip(ids, scores) if i not in skip][: request.k]
        return pb.SimilarItemsResponse(items=self._items(bundle, [i for i, _ in pairs], [s for _, s in pairs],
                                                         pb.RETRIEVAL), model_version=str(bundle.version))

    @staticmethod
    def _similar_blend(bundle: Bundle, item: str, k: int):
        """Items like ``item``: share × cosine in the sentence space + (1 - share) × cosine in the
        collaborative space (the share chosen by neighbourhood agreement at build), over both
        spaces' nearest items."""
        engine, share, table = bundle.search_engine, bundle.similar_semantic_share, bundle.items
        sem_query = engine.vectors[engine.row_of[item]]
        col_query = table.item_embedding[table.row_of[item]]
        depth = 4 * (k + 1)
        found, _ = engine.semantic_index.search(sem_query, min(depth, engine.semantic_index.size), with_shift=False)
        if share < 1.0:
            more, _ = bundle.search(col_query, depth, with_shift=False)
            found = list(found) + list(more)
        ids = [i for i in dict.fromkeys(found) if i != item and i not in bundle.removed and i in engine.row_of
               and i in table.row_of]
        if not ids:
            return [], np.zeros(0)
        sem = engine.vectors[[engine.row_of[i] for i in ids]] @ sem_query
        col = table.item_embedding[[table.row_of[i] for i in ids]] @ col_query
        col = col / max(float(np.linalg.norm(col_query)), 1e-12)  # item embeddings are unit: cosine
        scores = share * sem + (1 - share) * col
        order = np.argsort(-scores, kind="stable")[:k]
        return [ids[j] for j in order], scores[order]

    # --- Search: parse → legs → fuse → personalise → respond --------------------------------------
    def Search(self, request, context):
        self.counters.add("search")
        try:
            parsed = check_search(request)
        except InvalidRequest as err:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        bundle = self._bundle()
        engine = bundle.search_engine
        if engine is None:
            return self._fail(context, grpc.StatusCode.FAILED_PRECONDITION,
                              f"version {bundle.version} serves no search: export it with `tworec export --search`")
        state = self._user_state(bundle, request, parsed)
        excluded = set(request.exclude_item_ids) | bundle.removed
        wanted = set(request.categories)

        def allowed(item: str) -> bool:
            return item not in excluded and (not wanted or bool(bundle.categories_of(item) & wanted))

        found = engine.candidates(request.query, bundle.text_encoder(request.query), allowed)
        table = bundle.items
        rows = np.array([table.row_of.get(i, 0) for i in found.ids], np.int64)
        items = table.item_embedding[rows]
        shift = bundle.score_shift(rows)
        user = None
        if state.has_signal and found.ids and all(i in table.row_of for i in found.ids):
            query = bundle.query(state.user_row, state.history, state.history_ts, state.now)
            affinity = (items @ query + shift).astype(np.float32)
            # Search sends the ranker no live counts: its personal ranking was fitted without them.
            ranked = self._rank(bundle, state, Candidates(query, found.ids, affinity), context)
            if ranked is not None:  # the ranker unavailable: the anonymous ranking
                user = UserScores(affinity, np.asarray(ranked, np.float64))
        scores = engine.rank(found, items @ engine.population_query + shift, user)
        order = np.argsort(-scores, kind="stable")[: request.k]
        legs = {"lexical": pb.LEXICAL, "semantic": pb.SEMANTIC}
        results = []
        for j in order:
            item, r = found.ids[j], table.row_of.get(found.ids[j])
            results.append(pb.SearchResult(item_id=item, score=float(scores[j]), legs=[legs[g] for g in found.legs(j)],
                                           lexical_score=float(found.lexical[j]), semantic_score=float(found.semantic[j]),
                                           title=table.titles[r] if r is not None else "",
                                           cold=bool(table.cold[r]) if r is not None else False))
        return pb.SearchResponse(results=results, model_version=str(bundle.version), personalised=user is not None,
                                 request_id=secrets.token_hex(8))

    # --- UpsertItems / RemoveItems ----------------------------------------------------------------
    @staticmethod
    def _tokens(bundle: Bundle, items=None, titles=(), descriptions=(), category_lists=()):
        """(item tower version, input ids, attention mask, category rows) for the item tower."""
        from tworec.text import compose_item_text
        from tworec.towers.tokenizer import tokenize

        if items is not None:
            titles, descriptions = [i.title for i in items], [i.description for i in items]
            category_lists = [tuple(i.categories) for i in items]
        texts = [compose_item_text(title=t, description=d, categories=c)
                 for t, d, c in zip(titles, descriptions, category_lists)]
        tokens = tokenize(texts, bundle.max_text_length)
        cats = np.stack([bundle.category_rows(c) for c in category_lists])
        return (bundle.triton_versions[bundle.item_tower_model], tokens["input_ids"], tokens["attention_mask"], cats)

    def _embed(self, bundle: Bundle, titles, descriptions, category_lists, context) -> np.ndarray:
        budget = min(self.config.item_tower_budget_s, self._remaining(context))
        return self.triton.embed_items(*self._tokens(bundle, None, titles, descriptions, category_lists), budget)

    def UpsertItems(self, request, context):
        self.counters.add("upsert_items")
        try:
            check_upsert(request)
        except InvalidRequest as err:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        bundle = self._bundle()
        items = list(request.items)
        try:
            vectors = self._embed(bundle, [i.title for i in items], [i.description for i in items],
                                  [tuple(i.categories) for i in items], context)
        except ModelUnavailable as err:
            return self._fail(context, grpc.StatusCode.UNAVAILABLE, f"item tower unavailable: {err}")
        if self.recorder is not None:  # durable before it is acknowledged: a restart applies it again
            self.recorder.log_catalog_change("upsert", {"items": [_item_record(i) for i in items]})
        self.apply_upsert(bundle, items, vectors)
        return pb.UpsertItemsResponse(upserted=len(items), index_size=bundle.index.size)

    def apply_upsert(self, bundle: Bundle, items: list, vectors) -> None:
        from tworec.text import compose_item_text

        bundle.upsert([i.item_id for i in items], [i.title or i.description[:80] for i in items], vectors,
                      [bundle.category_rows(i.categories) for i in items])
        bundle.upsert_search([i.item_id for i in items],
                             [compose_item_text(i.title, i.description, i.categories) for i in items],
                             [list(i.categories) for i in items])
        self.live_changes.upserted(items)

    def RemoveItems(self, request, context):
        self.counters.add("remove_items")
        try:
            if not request.item_ids:
                raise InvalidRequest("item_ids is empty")
            check_ids(request.item_ids, "item_ids", MAX_REMOVE_ITEMS)
        except InvalidRequest as err:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        bundle = self._bundle()
        ids = list(dict.fromkeys(request.item_ids))
        if self.recorder is not None:
            self.recorder.log_catalog_change("remove", {"item_ids": ids})
        return pb.RemoveItemsResponse(removed=self.apply_remove(bundle, ids), index_size=bundle.index.size)

    def apply_remove(self, bundle: Bundle, ids: list) -> int:
        self.live_changes.removed(ids)
        return bundle.remove(ids)

    def replay_live_changes(self, bundle: Bundle):
        """Applies the catalog changes made since start-up to a newly loaded version (new items are
        re-embedded with that version's item tower)."""
        for kind, payload in self.live_changes.entries():
            if kind == "upsert":
                vectors = self.triton.embed_items(*self._tokens(bundle, payload), self.config.item_tower_budget_s)
                bundle.upsert([i.item_id for i in payload], [i.title or i.description[:80] for i in payload],
                              vectors, [bundle.category_rows(i.categories) for i in payload])
            else:
                bundle.remove(payload)

    def replay_logged_change(self, kind: str, record: dict):
        """A catalog change read back from the event log at start (``EventRecorder.replay``)."""
        bundle = self._bundle()
        if kind == "upsert":
            items = [pb.Item(**i) for i in record["items"]]
            vectors = self.triton.embed_items(*self._tokens(bundle, items), self.config.item_tower_budget_s)
            self.apply_upsert(bundle, items, vectors)
        else:
            self.apply_remove(bundle, record["item_ids"])

    # --- RecordEvents -----------------------------------------------------------------------------
    def RecordEvents(self, request, context):
        self.counters.add("record_events")
        if self.recorder is None:
            return self._fail(context, grpc.StatusCode.UNIMPLEMENTED, "this gateway records no events")
        if len(request.events) > contract.MAX_EVENTS_PER_CALL:
            return self._fail(context, grpc.StatusCode.INVALID_ARGUMENT,
                              f"too many events: {len(request.events)} > {contract.MAX_EVENTS_PER_CALL} per call")
        bundle = self._bundle()
        known = bundle.items.row_of
        try:
            outcome = self.recorder.record([_event(e) for e in request.events],
                                           lambda item: item in known and item not in bundle.removed)
        except OSError as err:  # the log could not make them durable: nothing was acknowledged
            log.error("event log append failed: %s", err)
            return self._fail(context, grpc.StatusCode.UNAVAILABLE, "the event log cannot be written; retry")
        return pb.RecordEventsResponse(
            accepted=outcome.accepted, duplicates=outcome.duplicates,
            rejected=[pb.RejectedEvent(index=i, reason=reason) for i, reason in outcome.rejected])


_EVENT_TYPES = {pb.IMPRESSION: EventType.IMPRESSION, pb.CLICK: EventType.CLICK, pb.ADD_TO_CART: EventType.ADD_TO_CART,
                pb.PURCHASE: EventType.PURCHASE, pb.RATING: EventType.RATING}


def _event(message) -> Event | EventReject:
    """The contract's Event for one ``pb.Event``, or the reason it cannot be one."""
    kind = _EVENT_TYPES.get(message.type)
    if kind is None:
        return EventReject.UNKNOWN_TYPE
    return Event(message.event_id, message.user_id, message.item_id, kind, message.timestamp, message.request_id,
                 message.position if message.HasField("position") else -1,
                 message.value if message.HasField("value") else None,
                 message.propensity if message.HasField("propensity") else None)


def _item_record(item) -> dict:
    return {"item_id": item.item_id, "title": item.title, "description": item.description,
            "categories": list(item.categories)}


class LiveChanges:
    """The ordered log of UpsertItems / RemoveItems since the gateway started."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = []

    def upserted(self, items):
        with self._lock:
            self._entries.append(("upsert", list(items)))

    def removed(self, ids):
        with self._lock:
            self._entries.append(("remove", list(ids)))

    def entries(self) -> list:
        with self._lock:
            return list(self._entries)
