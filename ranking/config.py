"""Typed configuration of the ranking model and its training: every setting once, with its
reason; the command line and saved configs derive from it (tworec.settings)."""
from __future__ import annotations

from dataclasses import dataclass

from tworec import settings
from tworec.settings import setting

MINING_SPLITS = ("valid", "train")
LIVE_FEATURE_USES = ("crossed", "new_items")


@dataclass(frozen=True)
class RankerConfig:
    candidates: int = setting(200, "retrieval depth: hard negatives come from this top, as in serving")
    hard_negatives: int = setting(15, "negatives per list from retrieval's top candidates (what the ranker "
                                      "re-orders in serving)")
    random_negatives: int = setting(4, "uniform random negatives per list, so it never trusts retrieval blindly")
    positives_in_candidates: bool = setting(True, "keep only lists whose positive retrieval put in its top "
                                                  "candidates: the only items the ranker ever re-orders")
    splits: tuple[str, ...] = setting(("valid",), "splits the lists come from: valid is the period retrieval never "
                                                  "fitted, like serving traffic")
    mining_queries: int = setting(0, "queries per split lists are mined from (0: all); the first in file order, "
                                     "whole users in a stable hash order: mining ranks every item per query")
    holdout_fraction: float = setting(0.1, "share of the lists held out for early stopping")
    min_lists: int = setting(64, "fewest training lists the ranker trains on; below, the stage stops and says so")
    id_dim: int = setting(16, "item- and user-id embedding size")
    category_dim: int = setting(8, "category embedding size")
    attribute_dim: int = setting(8, "user-attribute embedding size")
    cross_layers: int = setting(2, "DCN-v2 cross layers")
    cross_projection_dim: int = setting(16, "low-rank cross projection (0: full rank); with deep_layers, sized for "
                                            "serving 200 candidate rows per request on a CPU")
    deep_layers: tuple[int, ...] = setting((64, 32), "units of the deep tower's layers")
    item_id_dropout: float = setting(0.3, "share of rows whose item id (and popularity) is hidden, so new items "
                                          "are ranked through the unknown-item path")
    new_item_positive_repeats: int = setting(3, "copies of each list whose positive is a new (id-less) item: they "
                                                "are rare, and without them the unknown-item path learns 'no'")
    user_id_dropout: float = setting(0.2, "share of rows whose user id is hidden, so unknown users are ranked")
    live_dropout: float = setting(0.5, "share of training lists mined as trending-off serving sees them (no live term "
                                       "in retrieval, no live counts), so the ranker serves both ways")
    live_feature: str = setting("new_items", "how item_live_count reaches the score beside the retrieval score's "
                                             "live term: new_items (one learned weight × it, on new items' scores "
                                             "only: they have no id or popularity to cross it with) or crossed (a "
                                             "cross layers' input, free to trade warm hits for trending ones)",
                                choices=LIVE_FEATURE_USES)
    batch_size: int = setting(128, "lists per global batch, split across replicas")
    learning_rate: float = setting(0.002, "Adam learning rate")
    lazy_adam_above: int = setting(200_000, "items above which Adam updates only the batch's rows of the id tables "
                                           "(a step's cost then stays flat with the catalog)")
    epochs: int = setting(20, "most epochs; early stopping may end sooner")
    patience: int = setting(3, "early stopping: epochs without improvement")
    seed: int = setting(1, "seed of list mining, initialisation and shuffling")

    def __post_init__(self):
        settings.check(self)
        unknown = [s for s in self.splits if s not in MINING_SPLITS]
        if unknown:
            raise settings.SettingError(f"RankerConfig.splits: {unknown[0]!r} is not one of {', '.join(MINING_SPLITS)}")

    @property
    def list_size(self) -> int:
        return 1 + self.hard_negatives + self.random_negatives

    @classmethod
    def tiny(cls, **overrides) -> "RankerConfig":
        """A small, fast configuration for tests."""
        base = dict(candidates=30, hard_negatives=5, random_negatives=2, id_dim=4, category_dim=4,
                    attribute_dim=4, cross_projection_dim=8, deep_layers=(16,), batch_size=32, epochs=2,
                    min_lists=8)
        base.update(overrides)
        return cls(**base)
