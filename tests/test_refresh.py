"""Warm-start refresh: a model continues from the previous one on data that includes the logged
events; vocabularies grow without moving a row, and the result exports as the next version."""
import numpy as np


def test_transfer_weights_copies_and_grows_embedding_tables():
    from tworec.tf_setup import keras
    from tworec.training import WarmStartError, transfer_weights

    def model(vocab):
        m = keras.Sequential([keras.layers.Embedding(vocab, 4), keras.layers.Dense(2)])
        m.build((None, 3))
        return m

    old, new = model(5), model(8)
    counts = transfer_weights(old, new)
    assert counts == {"copied": 2, "grown": 1}
    np.testing.assert_array_equal(new.weights[0].numpy()[:5], old.weights[0].numpy())
    assert np.abs(new.weights[0].numpy()[5:]).sum() > 0  # new rows keep their initial values
    np.testing.assert_array_equal(new.weights[1].numpy(), old.weights[1].numpy())
    other = keras.Sequential([keras.layers.Embedding(5, 6), keras.layers.Dense(2)])
    other.build((None, 3))
    try:
        transfer_weights(old, other)
        raise AssertionError("a different architecture must be refused")
    except WarmStartError:
        pass


def test_a_refresh_on_logged_events_keeps_every_row_and_exports_the_next_version(
        synthetic_data, tiny_retrieval, tiny_ranker, tiny_repo, tmp_path):
    from tworec import contract, example_codec
    from tworec.beam.config import DataConfig, SplitConfig
    from tworec.beam.pipeline import run
    from tworec.contract import Event, EventType
    from tworec.export.artifact import DeploymentRepository
    from tworec.export.repository import export_repository
    from tworec.live.event_log import EventLog
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.train import train_ranker
    from tworec.tfrecord_io import read_records
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.train import train_retrieval

    base = [example_codec.decode(contract.INTERACTION_FEATURES, r)
            for s in contract.TEMPORAL_SPLITS for r in read_records(str(synthetic_data / s.value / "part-*"))]
    last = max(e["timestamp"] for e in base)
    items = sorted({e["item_id"] for e in base})[:30]
    log = EventLog(tmp_path / "log" / "r1")
    log.append([{"kind": "upsert", "at": last, "items": [{"item_id": "refresh-new", "title": "Orbit Notes",
                                                           "description": "Rockets.", "categories": ["Space"]}]}])
    events = [Event(f"e{n}", f"newcomer{n % 20}", items[n % 30] if n % 5 else "refresh-new", EventType.CLICK,
                    last + 60 * n) for n in range(400)]
    log.append([{"kind": "event", **e.to_json()} for e in events])
    log.close()
    data = tmp_path / "data"
    run(DataConfig(dataset="events", input=str(tmp_path / "log"), catalog=str(synthetic_data), history_length=10,
                   split=SplitConfig(train_fraction=0.97, valid_fraction=0.02, cold_item_fraction=0.0)), str(data))

    previous = RetrievalArtifact.load(tiny_retrieval)
    refreshed = train_retrieval(str(data), str(tmp_path / "retrieval"), previous.config.__class__(
        **{**previous.config.__dict__, "epochs": 1}), verbose=0, warm_start=str(tiny_retrieval))
    old, new = previous.vocabularies, refreshed.vocabularies
    assert new.items[:len(old.items)] == old.items and len(new.items) > len(old.items) and "refresh-new" in new.items
    assert new.users[:len(old.users)] == old.users and "newcomer3" in new.users
    assert refreshed.summary["warm_start"]["grown"] >= 2  # the item-id and user-id tables

    ranker = train_ranker(str(data), str(tmp_path / "retrieval"), str(tmp_path / "ranker"),
                          RankerConfig.tiny(epochs=1, splits=("train",)),
                          verbose=0, warm_start=str(tiny_ranker))
    assert ranker.summary["warm_start"]["grown"] >= 2
    old_attributes = RankerArtifact.load(tiny_ranker).tables().attributes
    assert ranker.tables().attributes[:len(old_attributes)] == old_attributes

    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    entry = export_repository(str(tmp_path / "retrieval"), str(tmp_path / "ranker"), str(repo))
    assert entry["version"] == 2 and DeploymentRepository(repo).current_version() == 2
    assert "refresh-new" in DeploymentRepository(repo).gateway(2).catalog().item_ids
