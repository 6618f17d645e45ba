"""``tworec export-embeddings``: a Beam job writing the embedding of every item and of every
user's latest state, from one deployed version, as sharded TFRecord and Parquet files.

    items   every catalog item of the data folder: the served embedding (what the index holds);
            items the version never saw are embedded from their text by its item tower
    users   each user's latest state: their last interaction plus the history before it, through
            the version's query tower (the same call the gateway makes)

Output (OUT/items/, OUT/users/): ``part-*.tfrecord.gz`` (tworec.contract.EMBEDDING_FEATURES) and
``part-*.parquet`` (id: string, kind: string, embedding: list<float>, as_of: int64, score_shift:
float; an item's retrieval score is query · embedding + score_shift, as in the served index). Runs on any Beam
runner; the model files are read in each worker's ``setup``, so they must be on a filesystem the
workers can read.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from tworec import contract, example_codec
from tworec.layout import DataLayout
from tworec.towers.catalog import padded_rows

EMBED_BATCH = 256


class _VersionFiles:
    """What a worker needs of one deployed version (paths and sizes only: picklable)."""

    def __init__(self, repo: str, version: int):
        from tworec.export.artifact import ITEM_TOWER_MODEL, DeploymentRepository

        repository = DeploymentRepository(repo)
        self.gateway = repository.gateway(version)
        self.item_tower = str(repository.triton_savedmodel(ITEM_TOWER_MODEL, self.gateway.triton[ITEM_TOWER_MODEL]))
        self.query_tower = str(self.gateway.query_tower_savedmodel)
        self.history_length = self.gateway.history_length
        self.max_text_length = self.gateway.max_text_length
        self.new_item_offset = self.gateway.new_item_offset


class _CatalogDoFn(beam.DoFn):
    def __init__(self, files: _VersionFiles):
        self.files = files

    def setup(self):
        catalog, tables = self.files.gateway.catalog(), self.files.gateway.tables()
        self.row_of = {item: r for r, item in enumerate(catalog.item_ids)}
        self.embedding = tables.item_embedding
        self.has_id = tables.item_row > 0
        self.categories = {c: i + 1 for i, c in enumerate(catalog.categories)}


class EmbedItemBatch(_CatalogDoFn):
    """Batches of item records → (item id, embedding, 0, score shift)."""

    def setup(self):
        super().setup()
        self._tower = None

    def _item_tower(self):
        if self._tower is None:
            from tworec.tf_setup import tf

            self._tower = tf.saved_model.load(self.files.item_tower).signatures["serving_default"]
        return self._tower

    def process(self, batch):
        unseen = [r for r in batch if r["item_id"] not in self.row_of]
        for r in batch:
            row = self.row_of.get(r["item_id"])
            if row is not None:
                yield r["item_id"], self.embedding[row], 0, 0.0 if self.has_id[row] else self.files.new_item_offset
        if unseen:
            from tworec.tf_setup import tf
            from tworec.towers.tokenizer import tokenize

            tokens = tokenize([r["item_text"] for r in unseen], self.files.max_text_length)
            cats = np.stack([padded_rows(r["item_categories"], self.categories, contract.MAX_ITEM_CATEGORIES)
                             for r in unseen])
            out = self._item_tower()(input_ids=tf.constant(tokens["input_ids"]),
                                     attention_mask=tf.constant(tokens["attention_mask"]),
                                     item_category_rows=tf.constant(cats))
            for r, vector in zip(unseen, out[contract.ITEM_TOWER_OUTPUT.name].numpy()):
                yield r["item_id"], vector, 0, self.files.new_item_offset


class LatestState(beam.CombineFn):
    """A user's interactions → the latest one (ties: the larger item id), with its history."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, r):
        key = (r["timestamp"], r["item_id"])
        return r if acc is None or key > (acc["timestamp"], acc["item_id"]) else acc

    def merge_accumulators(self, accs):
        out = None
        for a in accs:
            if a is not None:
                out = self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


class EmbedUserBatch(_CatalogDoFn):
    """Batches of (user id, latest interaction) → (user id, embedding, as_of, 0)."""

    def setup(self):
        from tworec.tf_setup import tf

        super().setup()
        users = self.files.gateway.users()
        self.user_rows = {u: i + 1 for i, u in enumerate(users)}
        self.query = tf.saved_model.load(self.files.query_tower).signatures["serving_default"]

    def process(self, batch):
        from tworec.tf_setup import tf

        n, length, dim = len(batch), self.files.history_length, self.embedding.shape[1]
        emb = np.zeros((n, length, dim), np.float32)
        mask = np.zeros((n, length), np.float32)
        ts = np.zeros((n, length), np.int64)
        users, now = np.zeros(n, np.int32), np.zeros(n, np.int64)
        for i, (user, r) in enumerate(batch):
            # The latest state: the last interaction itself, then what came before it.
            items = [r["item_id"], *r["history_item_ids"]]
            times = [r["timestamp"], *r["history_timestamps"]]
            j = 0
            for item, t in zip(items, times):
                if j == length:
                    break
                if item in self.row_of:
                    emb[i, j], mask[i, j], ts[i, j] = self.embedding[self.row_of[item]], 1.0, t
                    j += 1
            users[i], now[i] = self.user_rows.get(user, 0), r["timestamp"]
        out = self.query(user_row=tf.constant(users), history_embeddings=tf.constant(emb),
                         history_mask=tf.constant(mask), timestamp=tf.constant(now),
                         history_timestamps=tf.constant(ts))["query_embedding"].numpy()
        for (user, _), vector, t in zip(batch, out, now):
            yield user, vector, int(t), 0.0


def _record(kind: str):
    """(id, vector, as_of, score shift) → a row named as contract.EMBEDDING_FEATURES."""
    def to_record(element):
        id_, vector, as_of, shift = element
        return {"id": id_, "kind": kind, "embedding": [float(x) for x in vector], "as_of": as_of,
                "score_shift": float(shift)}
    return to_record


class WriteEmbeddings(beam.PTransform):
    def __init__(self, out_dir: str, kind: str):
        super().__init__()
        self.out_dir, self.kind = out_dir.rstrip("/"), kind

    def expand(self, embeddings):
        import pyarrow as pa

        schema = pa.schema([("id", pa.string()), ("kind", pa.string()),
                            ("embedding", pa.list_(pa.float32())), ("as_of", pa.int64()),
                            ("score_shift", pa.float32())])
        prefix = f"{self.out_dir}/{self.kind}s/part"
        records = embeddings | "Record" >> beam.Map(_record(self.kind))
        _ = (records | "Example" >> beam.Map(lambda r: example_codec.encode(contract.EMBEDDING_FEATURES, r))
             | "TFRecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord.gz"))
        return records | "Parquet" >> beam.io.WriteToParquet(prefix, schema, file_name_suffix=".parquet")


class ExportEmbeddings(beam.PTransform):
    def __init__(self, data_dir: str, repo: str, version: int, out_dir: str):
        super().__init__()
        self.layout = DataLayout(data_dir)
        self.files = _VersionFiles(repo, version)
        self.out_dir = out_dir

    def expand(self, pipeline):
        items = (pipeline
                 | "ReadItems" >> beam.io.ReadFromTFRecord(self.layout.items_pattern)
                 | "DecodeItems" >> beam.Map(lambda b: example_codec.decode(contract.ITEM_FEATURES, b))
                 | "BatchItems" >> beam.BatchElements(min_batch_size=1, max_batch_size=EMBED_BATCH)
                 | "EmbedItems" >> beam.ParDo(EmbedItemBatch(self.files)))
        reads = [pipeline | f"Read_{s.value}" >> beam.io.ReadFromTFRecord(self.layout.split_pattern(s))
                 for s in contract.TEMPORAL_SPLITS]
        users = (reads | "Interactions" >> beam.Flatten()
                 | "Decode" >> beam.Map(lambda b: example_codec.decode(contract.INTERACTION_FEATURES, b))
                 | "ByUser" >> beam.Map(lambda r: (r["user_id"], r))
                 | "Latest" >> beam.CombinePerKey(LatestState())
                 | "BatchUsers" >> beam.BatchElements(min_batch_size=1, max_batch_size=EMBED_BATCH)
                 | "EmbedUsers" >> beam.ParDo(EmbedUserBatch(self.files)))
        return {"items": items | "WriteItems" >> WriteEmbeddings(self.out_dir, "item"),
                "users": users | "WriteUsers" >> WriteEmbeddings(self.out_dir, "user")}


def export_embeddings(data_dir: str, repo: str, out_dir: str, version: int | None = None, pipeline_args=()):
    from tworec.beam.pipeline import pipeline_options
    from tworec.export.artifact import DeploymentRepository

    version = version or DeploymentRepository(repo).current_version()
    with beam.Pipeline(options=pipeline_options(list(pipeline_args))) as p:
        _ = p | "Export" >> ExportEmbeddings(data_dir, repo, int(version), out_dir)
    return version
