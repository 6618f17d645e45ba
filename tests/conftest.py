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


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic dataset written by the real data job (shared by the tower tests)."""
    from tworec.beam.pipeline import DataConfig, run
    from tworec.beam.sources.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("synthetic") / "data"
    run(DataConfig(dataset="synthetic", history_length=10,
                   synthetic=SyntheticConfig(interactions=6000, seed=11)), str(out))
    return out
