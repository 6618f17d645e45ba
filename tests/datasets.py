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
