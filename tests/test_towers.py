"""Two-tower retrieval: distributed training equivalence, the training loop's artifacts, and
cold items retrieved from their text alone."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HELPER = Path(__file__).parent / "helpers" / "mirrored_losses.py"


def _losses(data_dir, mode):
    done = subprocess.run([sys.executable, str(HELPER), str(data_dir), mode],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mirrored_two_devices_match_one_device_with_the_same_global_batch(synthetic_data):
    result = _losses(synthetic_data, "gather")
    single, mirrored = np.array(result["single"]), np.array(result["mirrored"])
    assert len(single) == len(mirrored) == 8
    np.testing.assert_allclose(mirrored, single, rtol=2e-4, atol=2e-5)
    # It is training, not standing still: the first batch scores better after the 8 steps. (Each
    # step's loss is on another batch, so the last step's loss need not be below the first's.)
    before, after = result["first_batch"]
    assert after < before, result["first_batch"]


def test_without_gathering_negatives_the_loss_changes_with_replicas(synthetic_data):
    """The control: each replica seeing only its local batch gives a different (easier) loss,
    so the test above would catch a missing gather."""
    result = _losses(synthetic_data, "local")
    assert abs(result["mirrored"][0] - result["single"][0]) > 0.05


def test_training_writes_weights_embeddings_logs_and_summary(synthetic_data, tmp_path):
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    out = tmp_path / "model"
    config = RetrievalConfig.tiny(epochs=4, patience=4, min_steps_before_stopping=0)
    artifact = train_retrieval(str(synthetic_data), str(out), config, verbose=0)
    summary = artifact.summary
    assert summary["replicas"] == 1 and summary["epochs_run"] == 4
    assert np.isfinite(summary["loss"]).all() and np.isfinite(summary["val_loss"]).all()
    assert summary["train_examples_per_second"] > 0
    from tworec.training import TrainingFolder as T

    A = RetrievalArtifact
    for path in (T.WEIGHTS + ".index", T.CHECKPOINT + ".index", T.LOGS, A.ITEM_EMBEDDINGS, A.ITEM_IDS, A.DESCRIPTION):
        assert (out / path).exists(), path
    assert not (out / T.BACKUP).exists()  # removed after a finished run
    loaded = RetrievalArtifact.load(out)
    assert loaded.config == config and loaded.summary == summary
    embeddings = loaded.item_embeddings
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    restored = loaded.restore()
    model, catalog = restored.model, restored.catalog
    np.testing.assert_allclose(model.item_embeddings(), embeddings, atol=1e-5)

    # Embedded "as if cold", every item goes the new-item path; only items with an id change.
    as_cold = model.item_embeddings(use_ids=False)
    tower = model.item_tower
    # Served new items come as float32 text vectors; the tower reads content at its table's half
    # precision, so an item's served embedding is the one training gave the same text.
    import re

    from tworec.tf_setup import tf
    from tworec.towers.encoder_cache import content_vectors

    served = content_vectors(catalog.texts, config)
    assert served.dtype == np.float32 and tower.content.dtype == tf.float16
    np.testing.assert_allclose(as_cold, model.content_embeddings(served, tower.category_ids.numpy()), atol=1e-5)
    # The content table is rebuilt from the texts, not saved with the weights.
    saved = [name for name, _ in tf.train.list_variables(str(out / T.WEIGHTS))]
    assert any("content_head" in n for n in saved) and not any(re.search(r"(^|/)_?content/", n) for n in saved)
    has_id = catalog.id_index > 0
    assert has_id.any() and (~has_id).any()
    np.testing.assert_allclose(as_cold[~has_id], embeddings[~has_id], atol=1e-5)
    assert np.abs(as_cold[has_id] - embeddings[has_id]).max() > 1e-3

    # The weights kept are the epoch with the best validation HitRate@100, not the last epoch's.
    from tworec.towers.features import Lookups
    from tworec.towers.selection import ValidationHitRate, validation_split

    by_epoch = summary["val_hitrate@100"]
    assert len(by_epoch) == 4 and len(set(by_epoch)) > 1, by_epoch
    judge = ValidationHitRate(validation_split(str(synthetic_data), catalog),
                              Lookups(catalog.item_ids, catalog.user_vocab), config.history_length)
    judge.set_model(model)
    offset = model.new_item_offset
    model.new_item_offset = 0.0  # the epochs were judged before the offset was fitted
    assert abs(judge.hitrate() - max(by_epoch)) < 1e-4, (judge.hitrate(), by_epoch)

    # The new-item offset: the fitted table's best (ties to the offset nearest 0), kept in the
    # artifact's description and score shifts, and scored through the model's shift exactly as the
    # fit scored it.
    fit = {float(o): v for o, v in summary["new_item_offset_fit"].items()}
    assert len(fit) >= 11 and min(fit) == 0.0 and max(fit) == 0.1
    from tworec.towers.selection import MIN_GAIN

    best = max(fit, key=lambda o: (fit[o], -abs(o)))
    assert offset == loaded.new_item_offset == (best if fit[best] - fit[0.0] >= MIN_GAIN else 0.0), (offset, fit)
    np.testing.assert_allclose(loaded.score_shift, np.where(catalog.id_index == 0, offset, 0.0))
    for tried in (0.1, 0.05):
        model.new_item_offset = tried
        assert abs(judge.hitrate() - fit[tried]) < 1e-4, (tried, judge.hitrate(), fit)
    assert fit[0.1] != fit[0.0]  # the offset reaches the ranking: the id-less items move


def test_never_seen_items_are_retrieved_for_a_user_into_their_topic(synthetic_data, tmp_path):
    """Brand-new items known only by their text (three Space ones, three Cooking ones) are embedded
    through the content path. For an unknown user whose history is Space items, the new Space
    items rank (on average) in the better half of the catalog (random: the middle), above the new
    Cooking items, and higher than they rank for a user whose history is Cooking items. Averages
    over three items per topic keep the test about the content path, not about one title. (How
    high exactly varies from run to run: TensorFlow's multi-threaded CPU training is not
    bit-reproducible, and this small model sits between the top 10% and the top third.)

    Runs in a fresh interpreter: the model it trains must not depend on TensorFlow state that
    earlier tests in the session left behind."""
    import os

    from conftest import ISOLATED_ENV, run_isolated

    if os.environ.get(ISOLATED_ENV) != "1":
        return run_isolated(f"{__file__}::test_never_seen_items_are_retrieved_for_a_user_into_their_topic",
                            synthetic_data)
    from tworec.tf_setup import tf
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.new_items import embed_new_items
    from tworec.towers.train import train_retrieval

    out = tmp_path / "content"
    restored = train_retrieval(str(synthetic_data), str(out),
                               RetrievalConfig(history_length=10, batch_size=64, epochs=8, patience=10,
                                               max_text_length=48), verbose=0).restore()
    model, catalog, config = restored.model, restored.catalog, restored.config
    new = embed_new_items(
        model, catalog, config,
        titles=["The Complete Galaxy Handbook", "Rockets and Orbits Explained", "A Telescope Journal",
                "The Little Sourdough Kitchen", "Soups and Sauces at Home", "The Pastry Chef Notebook"],
        descriptions=["Everything about rockets, orbits, telescopes and astronauts.",
                      "How spacecraft reach orbit, land on planets and explore the solar system.",
                      "Star charts, planets, galaxies and nights under the sky.",
                      "Recipes for bread, pastry, soup and sauces from a chef's oven.",
                      "Simmered stock, herbs, spices and a kitchen full of flavour.",
                      "Dough, butter, baking and dessert recipes for every season."],
        category_lists=[("Space",)] * 3 + [("Cooking",)] * 3)
    assert np.isfinite(new).all() and new.shape == (6, config.embedding_dim)
    space, cooking = new[:3], new[3:]

    items = model.item_embeddings()
    topic = np.array([cats[0] for cats in _categories(catalog)])

    def mean_ranks(name):
        rows = np.flatnonzero(topic == name)[:8]
        features = {
            "user_row": tf.constant([0]),  # an unknown user: only the history speaks
            "history_rows": tf.constant([np.pad(rows, (0, config.history_length - len(rows)),
                                                constant_values=-1)], tf.int32),
            "history_timestamps": tf.constant([[1_730_000_000] * config.history_length], tf.int64),
            "timestamp": tf.constant([1_730_000_100], tf.int64),
        }
        query = model.query_tower(features).numpy()[0]
        scores = items @ query
        return [float(np.mean([(scores > vector @ query).sum() + 1 for vector in group])) for group in (space, cooking)]

    space_user, cooking_user = mean_ranks("Space"), mean_ranks("Cooking")
    assert space_user[0] <= 0.5 * catalog.size, (space_user, catalog.size)
    assert space_user[0] < space_user[1], space_user
    assert space_user[0] < cooking_user[0], (space_user, cooking_user)


def _categories(catalog):
    names = ["", *catalog.categories]
    return [[names[c] for c in row if c] or [""] for row in catalog.category_ids]


def test_finetune_mode_trains_the_top_encoder_layers_over_cached_states(synthetic_data, tmp_path):
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.encoder_cache import build_encoder
    from tworec.towers.new_items import embed_new_items
    from tworec.towers.train import train_retrieval

    config = RetrievalConfig.tiny(encoder_mode="finetune", finetune_layers=1, epochs=1, steps_per_epoch=20)
    out = tmp_path / "finetuned"
    artifact = train_retrieval(str(synthetic_data), str(out), config, verbose=0)
    assert np.isfinite(artifact.summary["loss"]).all()
    restored = artifact.restore()
    model, catalog, config = restored.model, restored.catalog, restored.config
    top = model.item_tower.top_layers[0]
    assert top.trainable_weights and all(w.trainable for w in top.trainable_weights)
    pretrained = build_encoder(config).blocks[-1]
    moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(top.weights, pretrained.weights)]
    assert max(moved) > 1e-4  # training changed the top layer; the bottom comes from the cache
    np.testing.assert_allclose(model.item_embeddings(), artifact.item_embeddings, atol=1e-5)
    new = embed_new_items(model, catalog, config, titles=["Orbit and Rocket Notes"], category_lists=[("Space",)])
    assert new.shape == (1, config.embedding_dim) and np.isfinite(new).all()
    # The exported item tower (what Triton serves for upserts) runs the fine-tuned top layers too.
    from tworec.export.savedmodels import export_item_tower
    from tworec.text import compose_item_text
    from tworec.tf_setup import tf
    from tworec.towers.new_items import category_rows
    from tworec.towers.tokenizer import tokenize

    served = tf.saved_model.load(str(export_item_tower(model, config, tmp_path / "item_tower"))).signatures[
        "serving_default"]
    tokens = tokenize([compose_item_text(title="Orbit and Rocket Notes", description="", categories=("Space",))],
                      config.max_text_length)
    out_vector = served(input_ids=tf.constant(tokens["input_ids"]), attention_mask=tf.constant(tokens["attention_mask"]),
                        item_category_rows=tf.constant(category_rows(catalog, [("Space",)])))
    np.testing.assert_allclose(out_vector["item_embedding"].numpy(), new, atol=1e-5)


def test_early_stopping_judges_no_epoch_before_its_minimum_steps():
    """Validation loss that only gets worse: plain early stopping ends after the patience; with a
    minimum of optimizer steps it trains on until that many steps have run."""
    from tworec.tf_setup import keras
    from tworec.training import EarlyStoppingAfterSteps

    def epochs_run(min_steps):
        model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
        worse = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(val_loss=float(epoch)))
        stop = EarlyStoppingAfterSteps(min_steps, monitor="val_loss", patience=1)
        history = model.fit(x, y, batch_size=4, epochs=12, callbacks=[worse, stop], verbose=0)
        return len(history.history["loss"])

    assert epochs_run(0) == 2  # epoch 0 is the best, epoch 1 uses up the patience
    # 2 steps an epoch: epochs 0-4 end before step 12 and are not judged; epoch 5 is the best,
    # epoch 6 uses up the patience.
    assert epochs_run(12) == 7


def test_lazy_adam_updates_only_the_batch_rows_and_equals_adam_on_them():
    """Embedding tables train with LazyAdam: a step's cost does not grow with the catalog. On its
    first step it equals Keras' Adam (rows without gradient do not move under either); afterwards
    a row absent from the batch stays put, where Adam's momentum keeps moving it. A row twice in a
    batch gets its gradients summed."""
    import numpy as np

    from tworec.tf_setup import keras, tf
    from tworec.training import LazyAdam

    start = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    lazy_table, adam_table = tf.Variable(start), tf.Variable(start)
    lazy, adam = LazyAdam(0.1), keras.optimizers.Adam(0.1)

    def step(indices, values):
        sparse = tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(indices, tf.int64), tf.constant([6, 3]))
        lazy.apply_gradients([(sparse, lazy_table)])
        adam.apply_gradients([(tf.convert_to_tensor(sparse), adam_table)])

    step([1, 1, 4], [[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.2, -0.3, 0.0]])
    np.testing.assert_allclose(lazy_table.numpy(), adam_table.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(lazy_table.numpy()[[1, 4]], start[[1, 4]])
    np.testing.assert_array_equal(lazy_table.numpy()[[0, 2, 3, 5]], start[[0, 2, 3, 5]])
    after_first = lazy_table.numpy().copy()
    step([2], [[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(lazy_table.numpy()[1], after_first[1])  # not in the batch: unchanged
    assert not np.allclose(adam_table.numpy()[1], after_first[1])  # Adam's momentum moved it
    np.testing.assert_allclose(lazy_table.numpy()[2], adam_table.numpy()[2], rtol=1e-5, atol=1e-6)


def test_a_long_epoch_reports_progress_where_keras_writes_a_line_per_epoch():
    """Outside a terminal Keras is silent until an epoch ends; ProgressLines says how far it is."""
    import io

    import numpy as np

    from tworec.tf_setup import keras, tf
    from tworec.training import ProgressLines, progress_callbacks

    stream = io.StringIO()
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((64, 2), np.float32), np.ones((64, 1), np.float32))).batch(8)
    model.fit(data, epochs=1, verbose=0, callbacks=[ProgressLines(8, interval=0.0, stream=stream)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 and lines[-1].startswith("epoch 1: step 8/8, ") and "examples/s" in lines[0]
    assert [type(c) for c in progress_callbacks(8, 2)] == [ProgressLines] and progress_callbacks(8, 1) == []
