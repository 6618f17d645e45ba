"""Helpers of the benchmarks: those that start services stop them on SIGTERM (their ``with``
blocks unwind; Triton runs in its own process group, so nothing else would stop it); the replay
splits live − frozen by the users' live history; the short-history probe finds the no-history
query."""
import importlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STARTS_A_SERVICE = re.compile(r"\b(Service|TritonServer)\(|redis-server")


def benchmark(name: str):
    """A benchmarks/ module, imported with benchmarks/ on the path (they import each other by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


CHILD = """
import sys, time
sys.path.insert(0, {benchmarks!r})
from common import exit_on_sigterm
exit_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open({marker!r}, "w").write("cleaned up")
"""


def test_sigterm_runs_the_benchmarks_cleanup_and_exits_143(tmp_path):
    marker = tmp_path / "cleanup"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(benchmarks=str(BENCHMARKS), marker=str(marker))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert marker.read_text() == "cleaned up"


def test_every_benchmark_that_starts_a_service_exits_cleanly_on_sigterm():
    starters = [p for p in sorted(BENCHMARKS.glob("bench_*.py")) if STARTS_A_SERVICE.search(p.read_text())]
    assert starters, "the pattern finds no benchmark: it is out of date"
    for path in starters:
        main_block = path.read_text().split('if __name__ == "__main__":', 1)[-1]
        assert "exit_on_sigterm()" in main_block, f"{path.name} starts a service but leaves it running on SIGTERM"



def test_the_replays_live_history_masks_see_only_events_strictly_before_each_one():
    live_history_masks = benchmark("bench_replay").live_history_masks

    def event(user, item, t):
        return {"user_id": user, "item_id": item, "timestamp": t}

    before = [event("a", "x", 1)]
    valid = [event("b", "y", 5)]
    test = [event("a", "x", 10),  # a repeat of the training period, but a has no live history yet
            event("a", "z", 10),  # same time as the one above: still none
            event("a", "z", 11),  # now a has live history, and z is a repeat
            event("b", "w", 12),  # b's validation event is live history
            event("c", "v", 12)]
    masks = live_history_masks(before, valid, test)
    assert masks["live_history"].tolist() == [False, False, True, True, False]
    assert masks["repeat"].tolist() == [True, False, True, False, False]
    assert np.array_equal(masks["no_live_history"], ~masks["live_history"])


def test_the_short_history_probe_takes_the_one_no_history_query_of_unknown_users():
    from tworec.towers.queries import SplitQueries

    no_history_query = benchmark("probe_short_history").no_history_query

    def queries(vectors, users, counts):
        n = len(users)
        return SplitQueries(np.array(vectors, np.float32), np.array(users, np.int32), np.zeros(n, np.int32),
                            np.full((n, 2), -1, np.int32), np.array(counts, np.float32), np.zeros(n, np.float32),
                            np.zeros(n, np.int64))

    # a known user without history and an unknown one with history do not count
    split = queries([[9, 9], [1, 2], [5, 5], [1, 2]], [3, 0, 0, 0], [0, 0, 2, 0])
    assert no_history_query(split).tolist() == [1.0, 2.0]
    with pytest.raises(SystemExit, match="differ"):
        no_history_query(queries([[1, 2], [1, 3]], [0, 0], [0, 0]))
    with pytest.raises(SystemExit, match="nothing to compare"):
        no_history_query(queries([[1, 2]], [0], [1]))
