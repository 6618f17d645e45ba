"""The product's own synthetic dataset: deterministic, any size, readable by a language model.

- A catalog whose items belong to latent topics, with titles and descriptions made of real English
  words of their topic (beam/sources/synthetic_words.py) and Zipf-like popularity.
- Items arrive over time: a back catalog exists at the start, the rest is released during the
  period, so late items are naturally cold.
- Users prefer a few topics; their preferences drift from a start mix to an end mix over time.
- Users shop in sessions: a few interactions minutes apart on one topic, so what a user just did
  says more about what they want next than their older items.
- ``interactions`` sets the total exactly (10k … 10M+); users and items scale with it.

Everything is a function of (config, seed): users are generated in shards, each from its own seeded
random stream, so any runner produces the same records.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from tworec import text as item_text
from tworec.beam.config import SyntheticConfig
from tworec.beam.records import Interaction, Item, User
from tworec.beam.sources import assemble
from tworec.beam.sources.synthetic_words import (
    ADJECTIVES, AGE_BUCKETS, COUNTRIES, FORMATS, TEMPLATES, TOPICS,
)

DAY = 86_400
MINUTE = 60


TOPIC_NAMES = tuple(TOPICS)


@dataclass(frozen=True)
class Catalog:
    ids: tuple
    topics: np.ndarray  # primary topic index per item
    release: np.ndarray  # release offset in seconds from config.start
    weight: np.ndarray  # Zipf popularity weight
    # Per topic: item indices sorted by release, their release times and cumulative weights.
    by_topic: tuple
    # All items sorted by release, for off-topic (popularity) draws.
    by_release: tuple


def _sorted_pool(indices, release, weight):
    order = indices[np.argsort(release[indices], kind="stable")]
    return order, release[order], np.cumsum(weight[order])


@functools.lru_cache(maxsize=4)
def build_catalog(config: SyntheticConfig) -> Catalog:
    rng = np.random.default_rng([config.seed, 0])
    n = config.num_items
    topics = rng.integers(len(TOPIC_NAMES), size=n)
    span = config.days * DAY
    released_later = rng.random(n) >= config.back_catalog_share
    release = np.where(released_later, rng.integers(0, span, size=n), 0)
    # Popularity per topic: each topic has its own best-sellers (Zipf over its items), so what a
    # user of one topic wants differs from what is popular overall.
    rank_in_topic = np.zeros(n)
    for t in range(len(TOPIC_NAMES)):
        members = np.flatnonzero(topics == t)
        rank_in_topic[members] = rng.permutation(len(members))
    weight = (rank_in_topic + 1.0) ** -config.zipf_exponent
    ids = tuple(f"i{i:07d}" for i in range(n))
    by_topic = tuple(
        _sorted_pool(np.flatnonzero(topics == t), release, weight) for t in range(len(TOPIC_NAMES))
    )
    return Catalog(ids, topics, release, weight, by_topic, _sorted_pool(np.arange(n), release, weight))


def item_record(config: SyntheticConfig, index: int) -> Item:
    catalog = build_catalog(config)
    rng = np.random.default_rng([config.seed, 1, index])
    topic = TOPIC_NAMES[catalog.topics[index]]
    words = list(rng.choice(TOPICS[topic], size=4, replace=False))
    adj, fmt = ADJECTIVES[rng.integers(len(ADJECTIVES))], FORMATS[rng.integers(len(FORMATS))]
    if rng.random() < 0.5:
        title = f"The {adj} {words[0].title()} {fmt}"
    else:
        title = f"{adj} {words[0].title()} and {words[1].title()}"
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    description = template.format(adj=adj.lower(), w1=words[0], w2=words[1], w3=words[2],
                                  w4=words[3], fmt=fmt.lower(), topic=topic.lower())
    categories = (topic,)
    if rng.random() < 0.25:
        categories += (TOPIC_NAMES[rng.integers(len(TOPIC_NAMES))],)
        categories = tuple(dict.fromkeys(categories))
    text = item_text.compose_item_text(title=title, description=description, categories=categories)
    return Item(catalog.ids[index], title, text, categories, f"synthetic:item{index}")


@functools.lru_cache(maxsize=4)
def interactions_per_user(config: SyntheticConfig) -> np.ndarray:
    """How many interactions each user has: heavy-tailed activity, summing exactly to the total."""
    rng = np.random.default_rng([config.seed, 2])
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=config.num_users)
    return rng.multinomial(config.interactions, activity / activity.sum())


def _draw(pool, t: np.ndarray, rng) -> np.ndarray:
    """One item per time in ``t`` from ``pool``, by popularity among items released by then."""
    order, release, cumweight = pool
    available = np.searchsorted(release, t, side="right")
    draw = rng.random(len(t)) * cumweight[np.maximum(available, 1) - 1]
    picked = np.minimum(np.searchsorted(cumweight, draw, side="right"), np.maximum(available, 1) - 1)
    return np.where(available > 0, order[picked], -1)


def user_interactions(config: SyntheticConfig, user: int) -> list:
    count = int(interactions_per_user(config)[user])
    if count == 0:
        return []
    catalog = build_catalog(config)
    rng = np.random.default_rng([config.seed, 3, user])
    n_topics = len(TOPIC_NAMES)
    span = config.days * DAY
    start_mix = rng.dirichlet(np.full(n_topics, 0.25))
    end_mix = 0.5 * start_mix + 0.5 * rng.dirichlet(np.full(n_topics, 0.25))
    joined = rng.integers(0, span // 2)
    # Shopping sessions: each starts at a random time, stays on one topic drawn from the user's mix
    # of that moment, and its interactions come minutes apart.
    lengths = rng.geometric(1.0 / config.session_length, size=count)
    session = np.repeat(np.arange(count), lengths)[:count]
    starts = np.sort(rng.integers(joined, span, size=session[-1] + 1))
    opens = np.diff(session, prepend=-1) != 0  # the interaction opens its session
    elapsed = np.cumsum(np.where(opens, 0, rng.integers(MINUTE, 20 * MINUTE, size=count)))
    t = np.minimum(starts[session] + elapsed - elapsed[opens][session], span - 1)
    progress = ((starts - joined) / max(span - joined, 1))[:, None]
    mix = (1 - progress) * start_mix + progress * end_mix  # per session
    session_topics = (rng.random((len(starts), 1)) > np.cumsum(mix, axis=1)).sum(axis=1).clip(0, n_topics - 1)
    order = np.argsort(t, kind="stable")  # sessions can overlap in time
    t, topics, mix = t[order], session_topics[session][order], mix[session][order]
    items = np.full(count, -1)
    for topic in np.unique(topics):
        rows = np.flatnonzero(topics == topic)
        items[rows] = _draw(catalog.by_topic[topic], t[rows], rng)
    explore = (rng.random(count) < config.explore_share) | (items < 0)
    items[explore] = _draw(catalog.by_release, t[explore], rng)
    for _ in range(config.redraws):  # people rarely take the same item twice: draw again
        again = _repeats(items)
        if not again.any():
            break
        for topic in np.unique(topics[again]):
            rows = np.flatnonzero(again & (topics == topic))
            items[rows] = _draw(catalog.by_topic[topic], t[rows], rng)
    # Ratings: higher when the item's topic is one the user likes at that time.
    liking = mix[np.arange(count), catalog.topics[np.maximum(items, 0)]]
    ratings = np.clip(np.rint(1.5 + 3.5 * np.sqrt(liking) + rng.normal(0, 0.6, count)), 1, 5)
    user_id = f"u{user:07d}"
    return [
        Interaction(user_id, catalog.ids[i], int(config.start + ts), float(r), f"synthetic:{user_id}#{j}")
        for j, (i, ts, r) in enumerate(zip(items.tolist(), t.tolist(), ratings.tolist()))
        if i >= 0
    ]


def _repeats(items: np.ndarray) -> np.ndarray:
    """Mask of the draws whose item an earlier draw already took."""
    seen, out = set(), np.zeros(len(items), bool)
    for j, item in enumerate(items.tolist()):
        out[j] = item in seen and item >= 0
        seen.add(item)
    return out


def _shard_users(config: SyntheticConfig, shard: int):
    return range(shard, config.num_users, config.num_shards)


def generate_shard(shard: int, config: SyntheticConfig):
    for user in _shard_users(config, shard):
        yield from user_interactions(config, user)


def user_record(config: SyntheticConfig, user: int) -> User:
    rng = np.random.default_rng([config.seed, 4, user])
    attributes = (f"age:{AGE_BUCKETS[rng.integers(len(AGE_BUCKETS))]}",
                  f"country:{COUNTRIES[rng.integers(len(COUNTRIES))]}")
    return User(f"u{user:07d}", attributes, f"synthetic:user{user}")


class Synthetic(beam.PTransform):
    def __init__(self, config: SyntheticConfig | None = None):
        super().__init__()
        self._config = config or SyntheticConfig()

    def expand(self, pbegin):
        config = self._config
        interactions = (
            pbegin
            | "Shards" >> beam.Create(list(range(config.num_shards)))
            | "SpreadShards" >> beam.Reshuffle()
            | "Generate" >> beam.FlatMap(generate_shard, config)
        )
        items = (
            pbegin
            | "ItemIndices" >> beam.Create(list(range(config.num_items)))
            | "Items" >> beam.Map(lambda i: item_record(config, i))
        )
        users = (
            pbegin
            | "UserIndices" >> beam.Create(list(range(config.num_users)))
            | "Users" >> beam.Map(lambda u: user_record(config, u))
        )
        read = [
            pcoll
            | f"Count{kind}" >> beam.combiners.Count.Globally()
            | f"Key{kind}" >> beam.Map(lambda n, kind=kind: (kind, n))
            for kind, pcoll in (("interaction", interactions), ("item", items), ("user", users))
        ]
        return assemble(pbegin, interactions, items, users, (), read)
