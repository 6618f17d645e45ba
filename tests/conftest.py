"""Shared test set-up: Keras 2 for TFRS, quiet TensorFlow, and paths to the real datasets."""
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MOVIELENS = SHARED_DATA / "movielens-100k"
AMAZON = SHARED_DATA / "amazon-2018-magazine-subscriptions"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests read the real datasets from ../shared/data")
    return path
