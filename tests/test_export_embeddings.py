"""The batch embedding export (a Beam job): every item and every user's latest state, written as
TFRecord and Parquet, equal to what the served version computes."""
import glob

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(synthetic_data, tiny_repo, tmp_path_factory):
    """(the repository, the output folder, the version exported) after running the Beam job."""
    from tworec.export.embeddings import export_embeddings

    out = tmp_path_factory.mktemp("embeddings") / "out"
    version = export_embeddings(str(synthetic_data), str(tiny_repo), str(out),
                                pipeline_args=["--direct_running_mode=in_memory"])
    return tiny_repo, out, version


def _parquet(pattern):
    import pyarrow.parquet as pq

    rows = {}
    for path in sorted(glob.glob(pattern)):
        for r in pq.read_table(path).to_pylist():
            assert r["id"] not in rows
            rows[r["id"]] = r
    return rows


def test_every_item_gets_its_served_embedding(exported, synthetic_data):
    from tworec import contract, example_codec
    from tworec.serving.bundle import Bundle
    from tworec.tfrecord_io import read_records

    from tworec.export.artifact import DeploymentRepository

    repo, out, version = exported
    gateway = DeploymentRepository(repo).gateway(version)
    ids, tables = gateway.catalog().item_ids, gateway.tables()
    served = dict(zip(ids, tables.item_embedding))
    has_id = dict(zip(ids, tables.item_row > 0))
    offset = Bundle(str(repo), version).new_item_offset
    catalog = {example_codec.decode(contract.ITEM_FEATURES, r)["item_id"]
               for r in read_records(str(synthetic_data / "items" / "part-*.tfrecord.gz"))}
    parquet = _parquet(str(out / "items" / "part-*.parquet"))
    records = [example_codec.decode(contract.EMBEDDING_FEATURES, r)
               for r in read_records(str(out / "items" / "part-*.tfrecord.gz"))]
    assert set(parquet) == catalog == {r["id"] for r in records} and len(records) == len(catalog)
    for r in records:
        assert r["kind"] == "item"
        np.testing.assert_allclose(r["embedding"], served[r["id"]], atol=1e-6)
        np.testing.assert_allclose(parquet[r["id"]]["embedding"], served[r["id"]], atol=1e-6)
        # The served index's score shift: the new-item offset on items without an id.
        expected = 0.0 if has_id[r["id"]] else offset
        assert abs(r["score_shift"] - expected) < 1e-6 and abs(parquet[r["id"]]["score_shift"] - expected) < 1e-6
    assert offset > 0 and any(not v for v in has_id.values()) and any(has_id.values())


def test_every_user_gets_the_query_of_their_latest_state(exported, synthetic_data):
    from tworec import contract, example_codec
    from tworec.serving.bundle import Bundle
    from tworec.tfrecord_io import read_records

    repo, out, version = exported
    latest = {}
    for split in contract.TEMPORAL_SPLITS:
        for raw in read_records(str(synthetic_data / split.value / "part-*.tfrecord.gz")):
            r = example_codec.decode(contract.INTERACTION_FEATURES, raw)
            if r["user_id"] not in latest or (r["timestamp"], r["item_id"]) > (
                    latest[r["user_id"]]["timestamp"], latest[r["user_id"]]["item_id"]):
                latest[r["user_id"]] = r
    users = _parquet(str(out / "users" / "part-*.parquet"))
    assert set(users) == set(latest)
    bundle = Bundle(str(repo), version)
    for user in list(latest)[:25]:
        r = latest[user]
        items = [r["item_id"], *r["history_item_ids"]][: bundle.history_length]
        times = [r["timestamp"], *r["history_timestamps"]][: bundle.history_length]
        expected = bundle.query(bundle.user_rows.get(user, 0), [bundle.items.row_of[i] for i in items], times,
                                r["timestamp"])
        np.testing.assert_allclose(users[user]["embedding"], expected, atol=1e-5)
        assert users[user]["as_of"] == r["timestamp"] and users[user]["score_shift"] == 0.0
