"""End to end on loopback: the exported repository served by the real Triton binary and the real
gRPC gateway. Recommend answers k distinct items in descending score from the ranker; the request's
history changes the answer; an upserted item is retrievable by the next call; malformed requests
get INVALID_ARGUMENT; health reports SERVING; reflection lists the service."""
import grpc
import numpy as np
import pytest


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory):
    from conftest import repo_copy

    return repo_copy(tiny_repo, tmp_path_factory, "deploy")


@pytest.fixture(scope="module")
def service(repo):
    from tworec.serving.server import ServeConfig, Service

    with Service(ServeConfig(repo=str(repo), reload_poll_s=0.5)) as svc:
        yield svc


@pytest.fixture()
def client(service):
    from tworec.serving.client import RecommenderClient

    with RecommenderClient(service.address, timeout_s=10.0) as c:
        yield c


def _known_user_and_history(service):
    bundle = service.bundle
    user = next(iter(bundle.user_rows))
    warm = [i for i, r in bundle.items.row_of.items() if not bundle.items.cold[r]]
    return user, warm


def test_repository_layout_and_manifest(repo):
    from tworec.export.artifact import DeploymentRepository, GatewayArtifact
    from tworec.ranking.features import RankerTables

    manifest = DeploymentRepository(repo).manifest()
    assert manifest["current"] == 1
    entry = manifest["versions"]["1"]
    assert entry["triton"] == {"ranker": 1, "item_tower": 1} and entry["created"] and entry["data"]["path"]
    for model in ("ranker", "item_tower"):
        assert (repo / "triton" / model / "config.pbtxt").exists()
        ngc = (repo / "triton" / model / "config.ngc.pbtxt").read_text()
        assert 'platform: "tensorflow_savedmodel"' in ngc and "dynamic_batching" in ngc
        assert (repo / "triton" / model / "1" / "model.savedmodel" / "saved_model.pb").exists()
    assert (repo / "triton" / "ranker" / "1" / "model.tflite").exists()  # what the Python backend runs
    assert 'key: "tflite_model" value: { string_value: "model.tflite" }' in \
        (repo / "triton" / "ranker" / "config.pbtxt").read_text()
    G = GatewayArtifact
    for part in (G.DESCRIPTION, G.QUERY_TOWER, G.QUERY_TOWER_TFLITE, G.INDEX, G.ITEMS, G.USERS, RankerTables.FILE):
        assert (repo / "gateway" / "1" / part).exists(), part


def test_health_serving_and_reflection_lists_the_service(service, client):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    assert client.health() == "SERVING"
    assert client.health("tworec.v1.Recommender") == "SERVING"
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"tworec.v1.Recommender", "grpc.health.v1.Health"} <= names


def test_recommend_returns_k_distinct_ranked_items(service, client):
    from tworec.serving.client import pb

    user, warm = _known_user_and_history(service)
    response = client.recommend(user, warm[:5], k=10)
    ids = [i.item_id for i in response.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    # Ranked in descending score, except at most one new item in the exploration slot.
    slot = service.config.exploration.position
    assert not response.degraded
    assert all(i.stage == pb.RANKER or (j == slot and i.stage == pb.EXPLORATION and i.cold)
               for j, i in enumerate(response.items))
    scores = [i.score for i in response.items if i.stage == pb.RANKER]
    assert len(scores) >= 9 and scores == sorted(scores, reverse=True)
    assert not set(ids) & set(warm[:5])  # what the user just had is not recommended back
    assert response.known_user and response.model_version == "1"
    assert service.recommender.counters["degraded"] == 0


def test_the_history_in_the_request_changes_the_answer(service, client):
    """Histories from two different topics (the synthetic catalog's categories) give different
    answers, with no retraining."""
    bundle = service.bundle
    table = bundle.items
    _, warm = _known_user_and_history(service)
    by_category = {}
    for item in warm:
        by_category.setdefault(int(table.tables.item_category_rows[table.row_of[item]][0]), []).append(item)
    from tworec.serving.client import pb

    (_, a), (_, b) = sorted(by_category.items(), key=lambda kv: -len(kv[1]))[:2]
    first = client.recommend("someone-new", a[:3], k=50).items
    second = client.recommend("someone-new", b[:3], k=50).items
    assert len(first) == len(second) == 50
    ranked = [[i.item_id for i in answer if i.stage == pb.RANKER] for answer in (first, second)]
    assert ranked[0] != ranked[1]  # the ranked items, not the slot's random draw


def test_unknown_user_without_history_gets_the_model_or_popular_and_new_items(client, service):
    """By default the model answers a visitor it knows nothing about (the query of an unknown user,
    ranked); with ``unknown_visitors`` popularity, popular items with new items interleaved."""
    import dataclasses

    from tworec.serving.client import pb

    response = client.recommend("nobody-knows-me", [], k=10)
    assert len(response.items) == 10 and len({i.item_id for i in response.items}) == 10
    assert {i.stage for i in response.items} <= {pb.RANKER, pb.EXPLORATION} and not response.known_user
    gateway = service.recommender
    default = gateway.config
    gateway.config = dataclasses.replace(default, unknown_visitors="popularity")
    try:
        response = client.recommend("nobody-knows-me", [], k=10)
    finally:
        gateway.config = default
    assert len(response.items) == 10 and len({i.item_id for i in response.items}) == 10
    assert {i.stage for i in response.items} <= {pb.POPULARITY, pb.COLD_START}


def test_an_upserted_item_is_retrievable_by_the_next_call(service, client):
    bundle = service.bundle
    _, warm = _known_user_and_history(service)
    title = bundle.items.titles[bundle.items.row_of[warm[0]]]
    before = bundle.index.size
    assert "brand-new-item-1" not in [i.item_id for i in client.similar_items(text=title, k=5).items]
    reply = client.upsert_items([{"item_id": "brand-new-item-1", "title": title, "description": "",
                                  "categories": []}])
    assert reply.upserted == 1 and reply.index_size == before + 1
    # The next calls find it: by its text, and in Recommend. For the Recommend call, the history
    # is one warm item, and the items that outscore the new one for that query (brute force over the
    # live item table, with the gateway's own query tower) are excluded, so the new item must be the
    # first candidate the live ScaNN index returns (k = all candidates, so the ranker cannot hide it). (How high a tiny test model ranks a text-only
    # item by itself is a model-quality question, measured by `tworec eval`, not here.)
    # By its text: the semantic leg has it at once, nearest of all to its own title (the lexical
    # leg's background rebuild is the Search test's subject).
    results = client.search(title, k=200).results
    found = {r.item_id: r for r in results}
    assert found["brand-new-item-1"].semantic_score == max(r.semantic_score for r in results)
    table = bundle.items
    new_row = table.row_of["brand-new-item-1"]
    history = warm[1]
    q = bundle.query(0, [table.row_of[history]], [1_700_000_000], 1_700_000_000)
    scores = table.item_embedding @ q
    ahead = [table.item_ids[r] for r in np.nonzero(scores > scores[new_row])[0] if table.item_ids[r] != history]
    rec = client.recommend("someone-new", [history], k=service.recommender.config.candidates,
                           exclude_item_ids=ahead, context={"now": "1700000000"},
                           recent_timestamps=[1_700_000_000])
    hits = [i for i in rec.items if i.item_id == "brand-new-item-1"]
    assert hits and hits[0].cold
    # Known only by its text, it takes the model's new-item offset.
    assert bundle.new_item_offset == 0.05 and bundle.index.shifted
    assert abs(hits[0].retrieval_score - (scores[new_row] + 0.05)) < 1e-4
    assert not set(ahead) & {i.item_id for i in rec.items}
    # As history the new item is usable at once.
    assert len(client.recommend("someone-new", ["brand-new-item-1"], k=10).items) == 10
    assert client.remove_items(["brand-new-item-1"]).removed == 1
    assert "brand-new-item-1" not in [i.item_id for i in client.similar_items(text=title, k=5).items]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(k=0), "k must be"),
    (dict(k=-3), "k must be"),
    (dict(k=100000), "k must be"),
    (dict(user_id="a b"), "not a valid id"),
    (dict(user_id="x" * 500), "not a valid id"),
    (dict(recent_item_ids=[""]), "empty"),
    (dict(recent_item_ids=[f"i{n}" for n in range(51)]), "too many"),
    (dict(recent_item_ids=["a", "a"]), "duplicates"),
    (dict(exclude_item_ids=["ok", "bad\x00id"]), "not a valid id"),
    (dict(context={"now": "yesterday"}), "unix seconds"),
])
def test_malformed_requests_get_invalid_argument(client, kwargs, fragment):
    from tworec.serving.client import pb

    request = pb.RecommendRequest(**{"k": 10, **kwargs})
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Recommend(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()


def test_an_oversize_request_is_refused_before_it_is_read(service, client):
    """Request size is capped at the transport (4 MiB): a bigger message is refused with
    RESOURCE_EXHAUSTED and the service goes on serving."""
    from tworec.serving.server import MAX_MESSAGE_BYTES

    channel = grpc.insecure_channel(service.address, options=[("grpc.max_send_message_length", 64 << 20)])
    raw = channel.unary_unary("/tworec.v1.Recommender/Recommend")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\n" + b"\xff" * 5 + b"x" * (MAX_MESSAGE_BYTES + 1024), timeout=10)
    channel.close()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.health() == "SERVING"
    assert len(client.recommend("someone", [], k=3).items) == 3


def test_unknown_item_is_not_found_only_where_asked_for(client):
    with pytest.raises(grpc.RpcError) as err:
        client.similar_items(item_id="no-such-item", k=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # In a history, unknown items are ignored, not an error.
    assert len(client.recommend("u", ["no-such-item"], k=5).items) == 5


def test_ranker_scores_match_the_ranker_model_offline(service, client, tiny_ranker):
    """What Triton returns is the trained ranker's score, not some other number."""
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.model import serving_signature
    from tworec.tf_setup import tf

    user, warm = _known_user_and_history(service)
    gw = service.recommender
    bundle = service.bundle
    history = [bundle.items.row_of[i] for i in warm[:4]]
    query = bundle.query(bundle.user_rows[user], history, [1_700_000_000] * 4, 1_700_000_100)
    ids, scores = bundle.search(query, 30)
    rows = gw._ranker_rows(bundle, bundle.user_rows[user], {}, query, 4, 100 / 3600, ids, np.asarray(scores))
    via_triton = gw.triton.rank(1, rows, 5.0)
    ranker = RankerArtifact.load(tiny_ranker)
    scorer, _ = ranker.restore()
    offline = serving_signature(scorer, ranker.embedding_dim)({k: tf.constant(v) for k, v in rows.items()})
    np.testing.assert_allclose(via_triton, offline["score"].numpy(), rtol=1e-5, atol=1e-5)


def test_ranker_rows_cross_by_shared_memory_and_survive_a_triton_that_forgot_them(service):
    """The service's Triton is local, so the ranker's rows go through a registered shared-memory
    region per gateway thread. Scores equal those sent inside the gRPC message, for a few rows and
    for MAX_CANDIDATES rows, from several threads at once; when Triton forgets the regions (as a
    restarted Triton does) the call still answers right and the next one registers afresh; a call
    that ran past its budget leaves its region behind (Triton may still read and write it)."""
    from concurrent.futures import ThreadPoolExecutor

    from tworec import contract
    from tworec.serving.triton_models import ModelUnavailable, TritonModels

    gw, bundle = service.recommender, service.bundle
    user, warm = _known_user_and_history(service)
    history = [bundle.items.row_of[i] for i in warm[:3]]
    query = bundle.query(bundle.user_rows[user], history, [1_700_000_000] * 3, 1_700_000_100)
    rng = np.random.default_rng(3)

    def rows(count):
        ids = [bundle.items.item_ids[r] for r in rng.integers(0, len(bundle.items.item_ids), count)]
        return gw._ranker_rows(bundle, bundle.user_rows[user], {}, query, 3, 0.5, ids,
                               rng.normal(size=count).astype(np.float32))

    requests = [rows(n) for n in (1, 7, 200, contract.MAX_CANDIDATES)]
    version = bundle.triton_versions[bundle.ranker_model]
    plain = TritonModels(service.models.address)  # rows inside the message
    try:
        expected = [plain.rank(version, r, 10.0) for r in requests]
        shared = service.models
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda r: shared.rank(version, r, 10.0), requests * 3))
        for got, want in zip(answers, expected * 3):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        registered = plain.client.get_system_shared_memory_status(as_json=True)["regions"]
        assert registered and all(name.startswith("tworec_ranker_") for name in registered)

        shared.rank(version, requests[0], 10.0)  # this thread's region is registered too
        plain.client.unregister_system_shared_memory()  # every region, as after a Triton restart
        np.testing.assert_allclose(shared.rank(version, requests[2], 10.0), expected[2], rtol=1e-6, atol=1e-6)
        assert not plain.client.get_system_shared_memory_status(as_json=True).get("regions")
        np.testing.assert_allclose(shared.rank(version, requests[3], 10.0), expected[3], rtol=1e-6, atol=1e-6)
        registered = set(plain.client.get_system_shared_memory_status(as_json=True)["regions"])
        assert len(registered) == 1

        # A failed call (here: no budget left) may still run in Triton: its region is dropped, not reused.
        with pytest.raises(ModelUnavailable):
            shared.rank(version, requests[3], 0.0)
        np.testing.assert_allclose(shared.rank(version, requests[2], 10.0), expected[2], rtol=1e-6, atol=1e-6)
        assert set(plain.client.get_system_shared_memory_status(as_json=True)["regions"]) - registered
    finally:
        plain.close()
    assert len({tuple(np.round(a, 4)) for a in expected}) == len(expected)  # different rows, different scores


def test_a_new_version_rolls_out_under_load_without_failed_requests(service, repo, tiny_retrieval, tiny_ranker,
                                                                    tiny_search):
    """Publishing version 2 into the served repository: Triton loads it by itself, the gateway
    switches without a restart, and no request in flight fails meanwhile."""
    import threading
    import time

    from tworec.export.repository import export_repository
    from tworec.serving.client import RecommenderClient

    _, warm = _known_user_and_history(service)
    versions, failures, stop = [], [], threading.Event()

    def load():
        with RecommenderClient(service.address, timeout_s=10.0) as c:
            while not stop.is_set():
                try:
                    r = c.recommend("someone", warm[:3], k=10)
                    versions.append((r.model_version, r.degraded, len(r.items)))
                except grpc.RpcError as err:
                    failures.append(err.code())

    worker = threading.Thread(target=load)
    worker.start()
    try:
        entry = export_repository(str(tiny_retrieval), str(tiny_ranker), str(repo), search_dir=str(tiny_search))
        assert entry["version"] == 2
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and service.bundle.version != 2:
            time.sleep(0.2)
        time.sleep(1.0)  # some requests on the new version
    finally:
        stop.set()
        worker.join()
    assert service.bundle.version == 2
    assert not failures
    assert {v for v, _, _ in versions} == {"1", "2"}
    assert all(n == 10 for _, _, n in versions)
    # The export runs in this very process and competes for the 2 CPUs, so a ranker call may pass
    # its budget and answer from retrieval (degraded, not failed); version 2's ranker must answer.
    assert any(v == "2" and not degraded for v, degraded, _ in versions)
    assert sum(degraded for _, degraded, _ in versions) <= len(versions) // 10


def test_the_gateway_query_tower_matches_its_savedmodel(service):
    """The gateway's TFLite query tower answers what the exported signature answers, for requests
    one after another and from several threads at once (each thread has its own interpreter, so no
    request may see another's inputs)."""
    from concurrent.futures import ThreadPoolExecutor

    from tworec.tf_setup import tf

    bundle = service.bundle
    user, warm = _known_user_and_history(service)
    n, dim = bundle.history_length, bundle.dim
    signature = tf.saved_model.load(str(bundle.artifact.query_tower_savedmodel)).signatures["serving_default"]

    def plain(user_row, history, times, now):
        emb, mask, ts = np.zeros((1, n, dim), np.float32), np.zeros((1, n), np.float32), np.zeros((1, n), np.int64)
        emb[0, :len(history)] = bundle.items.item_embedding[history]
        mask[0, :len(history)] = 1
        ts[0, :len(history)] = times
        return signature(user_row=tf.constant([user_row], tf.int32), history_embeddings=tf.constant(emb),
                         history_mask=tf.constant(mask), timestamp=tf.constant([now], tf.int64),
                         history_timestamps=tf.constant(ts))["query_embedding"].numpy()[0]

    requests = []
    for j, length in enumerate((5, 1, 0, 3, 8, 2)):
        history = [bundle.items.row_of[i] for i in warm[j:j + length]]
        times = [1_700_000_000 + 60 * t for t in range(len(history))]
        requests.append((bundle.user_rows[user] if j % 2 else 0, history, times, 1_700_000_900 + j))
    expected = [plain(*r) for r in requests]
    for request, want in zip(requests, expected):
        np.testing.assert_allclose(bundle.query(*request), want, rtol=1e-5, atol=1e-5)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda r: bundle.query(*r), requests * 20))
    for got, want in zip(answers, expected * 20):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(expected[0] - expected[2]).max() > 1e-3  # the inputs matter


def test_search_answers_with_legs_personalises_for_a_user_and_refuses_bad_queries(service, client):
    from tworec.serving.client import pb

    bundle = service.bundle
    item = next(i for i, r in bundle.items.row_of.items() if not bundle.items.cold[r])
    word = bundle.items.titles[bundle.items.row_of[item]].split()[0]
    anonymous = client.search(word, k=10)
    assert 0 < len(anonymous.results) <= 10 and not anonymous.personalised and anonymous.request_id
    assert len({r.item_id for r in anonymous.results}) == len(anonymous.results)
    assert all(r.legs for r in anonymous.results)
    scores = [r.score for r in anonymous.results]
    assert scores == sorted(scores, reverse=True)
    assert any(pb.LEXICAL in r.legs and r.lexical_score > 0 for r in anonymous.results)
    user = next(iter(bundle.user_rows))
    personal = client.search(word, user_id=user, k=10)
    assert personal.personalised and len(personal.results) == len(anonymous.results)
    # A query no item's words match still gets semantic results.
    nonsense = client.search("qwzxv plorbt", k=5)
    assert len(nonsense.results) == 5 and all(r.legs == [pb.SEMANTIC] for r in nonsense.results)
    # Filters: a category no item has removes everything; exclusions are honoured.
    assert not client.search(word, categories=["no such category"], k=10).results
    top = anonymous.results[0].item_id
    assert top not in {r.item_id for r in client.search(word, exclude_item_ids=[top], k=10).results}
    for bad, reason in (("", "empty"), ("   ", "empty"), ("x" * 513, "too long"), ("bread\x01", "control")):
        with pytest.raises(grpc.RpcError) as err:
            client.search(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in err.value.details()


def test_an_upserted_item_becomes_searchable_and_similar_items_uses_the_sentence_space(service, client):
    import time

    from tworec.serving.client import pb

    client.upsert_items([{"item_id": "quokka-book", "title": "Quokka Island",
                          "description": "A photo book of smiling quokkas on Rottnest Island.",
                          "categories": ["Travel"]}])
    semantic_now = client.search("smiling marsupials on an island", k=20)
    assert "quokka-book" in [r.item_id for r in semantic_now.results]
    deadline = time.time() + 60  # the lexical leg rebuilds in the background
    while time.time() < deadline:
        found = {r.item_id: list(r.legs) for r in client.search("quokka", k=5).results}
        if pb.LEXICAL in found.get("quokka-book", []):
            break
        time.sleep(0.2)
    assert found.get("quokka-book") == [pb.LEXICAL, pb.SEMANTIC]
    similar = client.similar_items(item_id="quokka-book", k=5).items
    assert len(similar) == 5 and "quokka-book" not in [i.item_id for i in similar]
    client.remove_items(["quokka-book"])
    assert "quokka-book" not in [r.item_id for r in client.search("quokka", k=5).results]
