"""Triton dies while the gateway serves: answers keep coming, degraded (retrieval order) and within
each request's deadline; a shopper's Search falls back to the anonymous ranking; health stays
SERVING (retrieval still works); the service restarts Triton on the same ports by itself and full
two-stage answers return within 5 s of Triton being back."""
import os
import signal
import threading
import time

import grpc
import pytest


@pytest.fixture(scope="module")
def service(tiny_repo, tmp_path_factory):
    from conftest import repo_copy

    from tworec.serving.server import ServeConfig, Service

    repo = repo_copy(tiny_repo, tmp_path_factory, "faults")
    with Service(ServeConfig(repo=str(repo), reload_poll_s=0.2)) as svc:
        yield svc


def test_triton_killed_then_restarted_by_the_service(service):
    from tworec.serving.client import RecommenderClient, pb

    bundle = service.bundle
    warm = [i for i, r in bundle.items.row_of.items() if not bundle.items.cold[r]][:3]
    word = bundle.items.titles[bundle.items.row_of[warm[0]]].split()[0]
    results, searches, stop = [], [], threading.Event()

    def load():
        with RecommenderClient(service.address) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = client.recommend("someone", warm, k=10, timeout_s=1.0)
                    results.append((time.monotonic(), time.monotonic() - started, r.degraded, len(r.items),
                                    {i.stage for i in r.items}))
                except grpc.RpcError as err:
                    results.append((time.monotonic(), time.monotonic() - started, err.code(), 0, set()))
                started = time.monotonic()
                try:  # personalised through the ranker (Triton)
                    s = client.search(word, recent_item_ids=warm, k=10)
                    searches.append((time.monotonic(), s.personalised, len(s.results), started))
                except grpc.RpcError as err:
                    searches.append((time.monotonic(), err.code(), 0, started))
                time.sleep(0.02)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.0)
        old = service.triton_server
        os.killpg(old.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with RecommenderClient(service.address) as client:
            assert client.health() == "SERVING"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (service.triton_server is old or
                                               service.recommender.counters["triton_restarts"] == 0):
            time.sleep(0.1)
        back = service.triton_server
        assert back is not old and back.process.poll() is None
        assert back.ports == old.ports  # same address: nothing to reconfigure elsewhere
        # The killed server's Python-backend regions are gone from /dev/shm; the new one has its own.
        regions = os.listdir("/dev/shm")
        assert not [r for r in regions if r.startswith(old.shm_prefix)]
        assert [r for r in regions if r.startswith(back.shm_prefix)]
        # Triton is back: the supervisor waited for its models and warmed them up.
        ready_at = time.monotonic()
        while time.monotonic() < ready_at + 10 and not any(r[0] > ready_at and r[2] is False for r in results):
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    # Requests are judged by when they started: one in flight at the kill may have had Triton's
    # answer just before it, and end after the kill with a full answer.
    recovered_at = next(t for t, took, degraded, _, _ in results if t - took > killed_at and degraded is False)
    assert recovered_at - ready_at <= 5.0  # (negative: answers were full again before the supervisor returned)
    # Full answers from then on; while the supervisor still warms the models up, a slow first
    # inference on a loaded machine may degrade an answer, as it should.
    settled = max(recovered_at, ready_at)
    assert all(r[2] is False for r in results if r[0] > settled + 0.5)
    during = [r for r in results if killed_at < r[0] - r[1] and r[0] < recovered_at]
    assert during, "no request was made while Triton was down"
    assert all(r[2] is True or r[2] is False for r in during)  # answers, never errors
    assert all(r[1] < 1.0 for r in results)  # within every request's deadline
    assert all(r[3] == 10 for r in results)
    degraded = [r for r in during if r[2] is True]
    # Retrieval's order, and the exploration slot (it does not need the ranker).
    assert degraded and all(pb.RETRIEVAL in r[4] and r[4] <= {pb.RETRIEVAL, pb.EXPLORATION} for r in degraded)
    assert service.recommender.counters["degraded"] >= len(degraded)
    # Search: always an answer; without the ranker the anonymous ranking (not personalised).
    assert all(s[1] is True or s[1] is False for s in searches) and all(s[2] > 0 for s in searches)
    assert [s for s in searches if killed_at < s[3] and s[0] < recovered_at and s[1] is False]
    assert all(s[1] is True for s in searches if s[0] > settled + 0.5)
    assert all(s[1] is True for s in searches if s[0] < killed_at)
    with RecommenderClient(service.address) as client:
        final = client.recommend("someone", warm, k=10)
        assert not final.degraded and pb.RANKER in {i.stage for i in final.items} <= {pb.RANKER, pb.EXPLORATION}
