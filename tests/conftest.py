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


SYNTHETIC_DATA_ENV = "TWOREC_TEST_SYNTHETIC_DATA"
ISOLATED_ENV = "TWOREC_TEST_ISOLATED"


def run_isolated(nodeid: str, synthetic_data: Path, timeout: int = 600):
    """Runs one test in a fresh interpreter (for tests whose trained models must not depend on
    what earlier tests left in TensorFlow's process state), reusing the session's dataset."""
    import subprocess
    import sys

    env = dict(os.environ, **{SYNTHETIC_DATA_ENV: str(synthetic_data), ISOLATED_ENV: "1"})
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests read the real datasets from ../shared/data")
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic dataset written by the real data job (shared by the tower tests)."""
    from tworec.beam.pipeline import DataConfig, run
    from tworec.beam.sources.synthetic import SyntheticConfig

    if os.environ.get(SYNTHETIC_DATA_ENV):  # an isolated child run reuses its parent's dataset
        return Path(os.environ[SYNTHETIC_DATA_ENV])
    out = tmp_path_factory.mktemp("synthetic") / "data"
    run(DataConfig(dataset="synthetic", history_length=10,
                   # TWOREC_SYNTHETIC_SEED: run the suite on other synthetic data (the seed check)
                   synthetic=SyntheticConfig(interactions=6000, seed=int(os.environ.get("TWOREC_SYNTHETIC_SEED", 11)))),
        str(out))
    return out


@pytest.fixture(scope="session")
def tiny_retrieval(synthetic_data, tmp_path_factory):
    """A tiny content two-tower model trained on the synthetic dataset (tiny random encoder). Its
    new-item offset is set, not fitted (a fitted one may be 0), so the ranker's lists, the exported
    index and the gateway all run with a score shift."""
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    out = tmp_path_factory.mktemp("tiny_retrieval") / "retrieval"
    train_retrieval(str(synthetic_data), str(out), RetrievalConfig.tiny(epochs=3, new_item_offset=0.05), verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_ranker(synthetic_data, tiny_retrieval, tmp_path_factory):
    """A tiny ranker trained on lists mined with ``tiny_retrieval``."""
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.train import train_ranker

    out = tmp_path_factory.mktemp("tiny_ranker") / "ranker"
    train_ranker(str(synthetic_data), str(tiny_retrieval), str(out), RankerConfig.tiny(), verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_search(synthetic_data, tiny_retrieval, tiny_ranker, tmp_path_factory):
    """The search folder of the synthetic data (real MiniLM, BM25; fitted on its validation split,
    with the tiny ranker's scores)."""
    from tworec.search.artifact import build_search

    out = tmp_path_factory.mktemp("search") / "search"
    build_search(str(synthetic_data), str(tiny_retrieval), str(out), str(tiny_ranker), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tiny_retrieval, tiny_ranker, tiny_search, tmp_path_factory):
    """A deployment repository (version 1) of the tiny models, serving Search. Tests that serve it
    take their own copy (``repo_copy``), so one that publishes a new version does not change
    another's."""
    from tworec.export.repository import export_repository

    path = tmp_path_factory.mktemp("tiny_repo") / "repo"
    export_repository(str(tiny_retrieval), str(tiny_ranker), str(path), search_dir=str(tiny_search))
    return path


def repo_copy(tiny_repo: Path, tmp_path_factory, name: str) -> Path:
    import shutil

    target = tmp_path_factory.mktemp(name) / "repo"
    shutil.copytree(tiny_repo, target)
    return target


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis (Debian's redis-server, installed by `make test`) on a free loopback port,
    without persistence, for this test session."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: `make test` installs Debian's redis-server")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
