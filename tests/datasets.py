"""Small slices of the real datasets, written to a temporary folder (never into the project)."""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import AMAZON, MOVIELENS, require


def head_lines(source: Path, target: Path, n: int) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)


def movielens_slice(folder: Path, ratings: int, extra_rating_lines: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    head_lines(require(MOVIELENS / "u.data"), folder / "u.data", ratings)
    with open(folder / "u.data", "ab") as handle:
        handle.write(extra_rating_lines)
    for name in ("u.item", "u.user"):
        shutil.copy(MOVIELENS / name, folder / name)
    return folder


def amazon_slice(folder: Path, ratings: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    head_lines(require(AMAZON / "Magazine_Subscriptions.csv"), folder / "Magazine_Subscriptions.csv", ratings)
    shutil.copy(AMAZON / "meta_Magazine_Subscriptions.json.gz", folder)
    return folder


def synthetic_csv(folder: Path, items: int, interactions: int, rating_scale: float = 1.0, seed: int = 5) -> Path:
    """The product's synthetic data written in the csv format a user brings (README: 'Your own
    data'), ratings multiplied by ``rating_scale`` (2.0: a 0-10 scale)."""
    import csv

    from tworec.beam.config import SyntheticConfig
    from tworec.beam.sources.synthetic import item_record, user_interactions

    config = SyntheticConfig(interactions=interactions, items=items, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["item_id", "title", "text", "categories"])
        for i in range(config.num_items):
            item = item_record(config, i)
            out.writerow([item.item_id, item.title, item.text, "|".join(item.categories)])
    with open(folder / "interactions.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["user_id", "item_id", "timestamp", "rating"])
        for user in range(config.num_users):
            for r in user_interactions(config, user):
                out.writerow([r.user_id, r.item_id, r.timestamp, f"{r.rating * rating_scale:g}"])
    return folder
