"""Typed configuration of the data job: every setting once, with its reason. The command line
derives its flags from these classes (tworec.settings); nothing here imports Beam, so the
``tworec`` command starts fast."""
from __future__ import annotations

import math
from dataclasses import dataclass

from tworec import contract, settings
from tworec.settings import section, setting

# --dataset NAME → the source transform that reads it ("module:class" under tworec.beam.sources).
SOURCES = {
    "synthetic": "synthetic:Synthetic",
    "movielens-100k": "movielens:MovieLens100K",
    "amazon-2018": "amazon:Amazon2018",
    "csv": "csv_files:CsvFiles",
    "events": "events:EventLogSource",
}
DATASETS = tuple(SOURCES)


@dataclass(frozen=True)
class RatingRange:
    low: float = 0.0
    high: float = 5.0

    def __str__(self) -> str:
        return f"{self.low:g},{self.high:g}"

    @classmethod
    def parse(cls, text: str) -> "RatingRange":
        """``"low,high"`` → RatingRange."""
        try:
            low, high = (float(x) for x in text.split(","))
        except ValueError:
            raise settings.SettingError(f"a rating range is low,high (e.g. 0,10), not {text!r}") from None
        if not low <= high:
            raise settings.SettingError(f"rating range {text!r}: low must not exceed high")
        return cls(low, high)

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SplitConfig:
    train_fraction: float = setting(0.8, "share of interactions, in global time order, in train")
    valid_fraction: float = setting(0.1, "share after train in valid; test gets the rest")
    cold_item_fraction: float = setting(0.1, "share of items held out of train entirely, to measure cold start")
    tfrs_train_fraction: float = setting(0.8, "train share of the TFRS tutorials' random split")
    seed: int = setting(42, "seed of the cold-item and TFRS splits")

    def __post_init__(self):
        if not (0 < self.train_fraction and 0 <= self.valid_fraction
                and self.train_fraction + self.valid_fraction < 1):
            raise settings.SettingError("need 0 < train_fraction, 0 <= valid_fraction and their sum < 1")
        if not 0 <= self.cold_item_fraction < 1 or not 0 < self.tfrs_train_fraction < 1:
            raise settings.SettingError("cold_item_fraction must be in [0, 1), tfrs_train_fraction in (0, 1)")


@dataclass(frozen=True)
class SyntheticConfig:
    interactions: int = setting(20_000, "interactions in the synthetic dataset (10k … 10M+)")
    seed: int = setting(7, "seed of the synthetic dataset")
    users: int = setting(0, "0: interactions // 30")
    items: int = setting(0, "catalog size; 0: 6 * sqrt(interactions), at least 200")
    days: int = setting(365, "length of the period the interactions span")
    start: int = setting(1_704_067_200, "unix time the period starts (2024-01-01 UTC)")
    back_catalog_share: float = setting(0.6, "share of items released before the period; the rest arrive during it")
    zipf_exponent: float = setting(1.05, "item popularity falls off as rank ** -exponent")
    explore_share: float = setting(0.1, "share of interactions drawn by global popularity, off the user's topics")
    session_length: float = setting(4.0, "mean interactions per shopping session (one topic, minutes apart); 1: "
                                         "every interaction its own session")
    redraws: int = setting(3, "times a draw of an item the user already had is drawn again (repeats are rare)")
    interactions_per_shard: int = setting(50_000, "generation work per Beam element")

    @property
    def num_users(self) -> int:
        return self.users or max(20, self.interactions // 30)

    @property
    def num_items(self) -> int:
        return self.items or max(200, int(6 * math.sqrt(self.interactions)))

    @property
    def num_shards(self) -> int:
        return max(1, min(self.num_users, math.ceil(self.interactions / self.interactions_per_shard)))


@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("synthetic", "which source reads the input", choices=DATASETS)
    input: str | None = setting(None, "folder of the raw files (movielens-100k and amazon-2018 have defaults; for "
                                      "events: the gateway's event log folder)")
    catalog: str | None = setting(None, "for --dataset events: the data folder the served model was trained on (its "
                                        "items, users and interactions join the logged events)")
    history_length: int = setting(contract.HISTORY_LENGTH, "most recent items each example carries as history")
    shards: int = setting(0, "TFRecord files per split (0: one per 200k examples)")
    rating_range: RatingRange = setting(RatingRange(), "allowed ratings of --dataset csv: low,high",
                                        parse=RatingRange.parse)
    max_rejected_share: float = setting(0.05, "the job fails when it rejects more than this share of the "
                                              "interactions, items or users it read")
    split: SplitConfig = section(SplitConfig, "splits")
    synthetic: SyntheticConfig = section(SyntheticConfig, "the synthetic dataset", prefix="synthetic_")

    def __post_init__(self):
        settings.check(self)
