"""Training lists for the ranker: each example's positive item followed by negatives mined from
the retrieval model's own top candidates (hard negatives, the distribution the ranker re-orders
in serving) and uniform random items. Items the user had before are never negatives."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tworec.ranking.config import RankerConfig
from tworec.ranking.features import RankerTables
from tworec.towers.queries import SplitQueries
from tworec.towers.scoring import query_chunk, top_candidates


@dataclass
class RankingLists:
    queries: SplitQueries  # the examples the lists were made for, aligned with candidates
    candidates: np.ndarray  # [N, L] catalog rows, the positive first
    scores: np.ndarray  # [N, L] retrieval scores (the live-count term included, for lists mined with it)
    live: np.ndarray  # [N, L] the candidates' item_live_count at the list's time (0: mined trending off)

    def __len__(self) -> int:
        return len(self.candidates)

    def subset(self, rows: np.ndarray) -> "RankingLists":
        return RankingLists(self.queries.subset(rows), self.candidates[rows], self.scores[rows], self.live[rows])

    @classmethod
    def concat(cls, parts) -> "RankingLists":
        return cls(SplitQueries.concat([p.queries for p in parts]), np.concatenate([p.candidates for p in parts]),
                   np.concatenate([p.scores for p in parts]), np.concatenate([p.live for p in parts]))


def repeat_new_item_positives(lists: RankingLists, item_row: np.ndarray, repeats: int) -> RankingLists:
    """``lists`` plus ``repeats - 1`` more copies of each list whose positive has no id embedding
    (``item_row`` 0: a new item), so the rare new-item positives weigh enough in training."""
    if repeats <= 1:
        return lists
    new = np.nonzero(item_row[lists.candidates[:, 0]] == 0)[0]
    return lists.subset(np.concatenate([np.arange(len(lists)), np.repeat(new, repeats - 1)]))


def mine_lists(queries: SplitQueries, item_embeddings: np.ndarray, config: RankerConfig,
               seed: int = 0, chunk: int = 2048, score_shift: np.ndarray | None = None, live=None) -> RankingLists:
    """Lists as serving sees them: with trending on (``live``, a LiveTerm), candidates and scores
    with the live-count term at each list's time and every candidate's live count; for a
    ``config.live_dropout`` share of the examples (and without ``live``), as with trending off: no
    term, counts 0."""
    rng = np.random.default_rng(seed)
    num_items = len(item_embeddings)
    shift = np.zeros(num_items, np.float32) if score_shift is None else np.asarray(score_shift, np.float32)
    lists, scores, kept = [], [], []
    trending_off = np.random.default_rng([seed, 7]).random(len(queries)) < config.live_dropout
    chunk = query_chunk(num_items, chunk)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        q, history, target = queries.query[start:stop], queries.history_rows[start:stop], queries.item_row[start:stop]
        term = live.of_all_items(queries.timestamp[start:stop], num_items) if live is not None else None
        if term is not None:
            term[trending_off[start:stop]] = 0.0
        top, _ = top_candidates(q, item_embeddings, history, config.candidates, shift, term)
        first = len(lists)
        for i in range(stop - start):
            if config.positives_in_candidates and target[i] not in top[i]:
                continue
            kept.append(start + i)
            banned = set(history[i][history[i] >= 0].tolist()) | {int(target[i])}
            pool = [r for r in top[i].tolist() if r not in banned]
            hard = rng.choice(pool, size=min(config.hard_negatives, len(pool)), replace=False).tolist()
            chosen = set(hard) | banned
            randoms = []
            while len(hard) + len(randoms) < config.hard_negatives + config.random_negatives:
                r = int(rng.integers(num_items))
                if r not in chosen or len(chosen) >= num_items:
                    randoms.append(r)
                    chosen.add(r)
            lists.append([int(target[i]), *hard, *randoms])
        rows = np.array(lists[first:], np.int64).reshape(-1, config.list_size)
        local = np.array(kept[first:], np.int64) - start
        listed = np.einsum("nd,nld->nl", q[local], item_embeddings[rows]) + shift[rows]
        scores.append(listed + np.take_along_axis(term[local], rows, 1) if term is not None else listed)
    kept_queries = queries.subset(np.array(kept, np.int64))
    candidates = np.array(lists, np.int64).reshape(-1, config.list_size)
    features = np.zeros(candidates.shape, np.float32)
    if live is not None:
        features = live.events.features(kept_queries.timestamp, candidates, live.half_life_s)
        features[trending_off[np.array(kept, np.int64)]] = 0.0
    scores = np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, config.list_size), np.float32)
    return RankingLists(kept_queries, candidates, scores, features)


def list_dataset(lists: RankingLists, tables: RankerTables, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_remainder: bool = False):
    """A tf.data pipeline of ranker features: user inputs [B, ...], candidate inputs [B, L, ...]."""
    from tworec.tf_setup import tf

    q = lists.queries
    base = tf.data.Dataset.from_tensor_slices({
        "user_row": q.user_row.astype(np.int32), "query_embedding": q.query.astype(np.float32),
        "history_count": q.history_count, "hours_since_last": q.hours_since_last,
        "candidates": lists.candidates.astype(np.int32), "retrieval_score": lists.scores,
        "item_live_count": lists.live,
    })
    if shuffle:
        base = base.shuffle(len(lists), seed=seed, reshuffle_each_iteration=True)
    item_row = tf.constant(tables.item_row)
    categories = tf.constant(tables.item_category_rows)
    embeddings = tf.constant(tables.item_embedding)
    popularity = tf.constant(tables.item_log_popularity)
    attributes = tf.constant(tables.user_attribute_rows)

    def features(batch):
        rows = batch.pop("candidates")
        batch.update(user_attribute_rows=tf.gather(attributes, batch["user_row"]),
                     item_row=tf.gather(item_row, rows), item_category_rows=tf.gather(categories, rows),
                     item_embedding=tf.gather(embeddings, rows), item_log_popularity=tf.gather(popularity, rows))
        return batch

    return base.batch(batch_size, drop_remainder=drop_remainder).map(
        features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
