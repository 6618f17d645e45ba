"""``tworec export``: a versioned deployment repository, what ``tworec serve`` runs.

    REPO/manifest.json                 every version: what it was built from, eval metrics, data
                                       snapshot, creation time; "current" names the live one
    REPO/triton/ranker/...             the ranker (Triton model repository, standard layout;
                                       each version: model.savedmodel/ + model.tflite, what the
                                       Python backend runs)
    REPO/triton/item_tower/...         the item tower, so Triton embeds new items
    REPO/gateway/<N>/                  what the gateway process loads for version N:
        bundle.json                    config + the Triton model versions it pairs with
        query_tower.savedmodel/        the query tower
        query_tower.tflite             the same, converted: what the gateway runs
        index/                         ScaNN index + id mapping
        catalog.npz                    ids, titles, cold flags + the ranker's feature tables
        users.txt                      user vocabulary (row = line number + 1)

An export adds version N+1 everywhere and switches manifest.json last (atomically), so a running
gateway and Triton keep serving N until N+1 is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec import contract
from tworec.export.savedmodels import export_item_tower, export_query_tower, query_tower_tflite, row_model_tflite
from tworec.export.triton_repo import ModelConfig, TensorSpec, publish_savedmodel, versions

MANIFEST = "manifest.json"
RANKER_MODEL = "ranker"
ITEM_TOWER_MODEL = "item_tower"


@dataclass(frozen=True)
class RepoLayout:
    root: str

    @property
    def manifest(self) -> Path:
        return Path(self.root) / MANIFEST

    @property
    def triton(self) -> Path:
        return Path(self.root) / "triton"

    def gateway(self, version: int) -> Path:
        return Path(self.root) / "gateway" / str(version)


# The ranker's signature is XLA-compiled for these row counts when Triton loads it (a request pads
# up to the next one; more rows run in chunks of the largest): a few small ones for short lists,
# then multiples of the gateway's default 200 candidates, which batches of whole requests fill
# exactly (1,000 candidates = 800 + 200).
RANKER_ROW_BUCKETS = (8, 64, 200, 400, 800)
# The ranker's TFLite conversion, in its Triton version folder: what the Python backend runs.
RANKER_TFLITE = "model.tflite"
# bundle.json's "ranker_inputs": how the gateway sends rows to this version's ranker. Versions
# exported before packing have no such key; the gateway refuses them with a line saying to re-export.
RANKER_INPUTS_PACKED = "packed"


def ranker_model_config(embedding_dim: int) -> ModelConfig:
    # Rows are (user, candidate) pairs, so concurrent requests batch along rows.
    packed = [p.tensor for p in contract.ranker_packed_inputs(embedding_dim)]
    return ModelConfig(RANKER_MODEL, inputs=triton_specs(packed, embedding_dim),
                       outputs=triton_specs((contract.RANKER_OUTPUT,), embedding_dim),
                       max_batch_size=8 * contract.MAX_CANDIDATES, dynamic_batching_delay_us=0,
                       versions_served=2, tf_threads=1, xla_row_buckets=RANKER_ROW_BUCKETS,
                       tflite_model=RANKER_TFLITE)


def item_tower_model_config(embedding_dim: int) -> ModelConfig:
    return ModelConfig(ITEM_TOWER_MODEL, inputs=triton_specs(contract.ITEM_TOWER_INPUTS, embedding_dim),
                       outputs=triton_specs((contract.ITEM_TOWER_OUTPUT,), embedding_dim),
                       max_batch_size=256, dynamic_batching_delay_us=1000, versions_served=2)


def triton_specs(tensors, embedding_dim: int):
    # A scalar per row is dims [1] with reshape to [] in Triton's config (its documented pattern),
    # matching the SavedModel's [batch] tensors.
    out = []
    for t in tensors:
        dims = t.dims(embedding_dim)
        out.append(TensorSpec(t.name, t.dtype, dims or (1,), reshape=() if not dims else None))
    return tuple(out)


def _data_snapshot(data_dir: str) -> dict:
    stats_path = Path(data_dir) / "stats.json"
    if not stats_path.exists():
        return {"path": os.path.abspath(data_dir)}
    raw = stats_path.read_bytes()
    stats = json.loads(raw)
    return {"path": os.path.abspath(data_dir), "stats_sha256": hashlib.sha256(raw).hexdigest(),
            "dataset": stats.get("config", {}).get("dataset"),
            "splits": {k: v.get("examples") for k, v in stats.get("splits", {}).items()}
            if isinstance(stats.get("splits"), dict) else None}


def read_manifest(repo: str) -> dict:
    path = RepoLayout(repo).manifest
    return json.loads(path.read_text()) if path.exists() else {"current": None, "versions": {}}


def export_repository(retrieval_dir: str, ranker_dir: str, repo: str, eval_dir: str | None = None) -> dict:
    """Publishes the next version; returns its manifest entry."""
    from tworec.export.triton_repo import site_packages_path
    from tworec.ranking.train import export_savedmodel, load_ranker
    from tworec.towers.index import IndexConfig, ItemIndex
    from tworec.towers.train import load_retrieval

    layout = RepoLayout(repo)
    ranker_meta = json.loads((Path(ranker_dir) / "ranker.json").read_text())
    if os.path.realpath(ranker_meta["retrieval"]) != os.path.realpath(retrieval_dir):
        raise ValueError(f"the ranker in {ranker_dir} was trained on candidates of {ranker_meta['retrieval']}, "
                         f"not {retrieval_dir}: export the retrieval model it was trained with")
    model, catalog, _, config = load_retrieval(retrieval_dir)
    scorer, tables, _ = load_ranker(ranker_dir)
    dim = config.embedding_dim
    manifest = read_manifest(repo)
    known = [int(v) for v in manifest["versions"]] + versions(layout.triton / RANKER_MODEL)
    version = max(known, default=0) + 1
    staging = Path(repo) / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        export_query_tower(model, config, staging / "query_tower.savedmodel")
        (staging / "query_tower.tflite").write_bytes(query_tower_tflite(staging / "query_tower.savedmodel"))
        export_item_tower(model, config, staging / "item_tower.savedmodel")
        # Saved again from the weights, so the signatures are the ones this code's contract serves
        # even for a ranker folder written by an earlier version.
        export_savedmodel(scorer, dim, staging / "ranker.savedmodel")
        ItemIndex.build(tables.item_embedding, catalog.item_ids, IndexConfig(num_neighbors=200),
                        score_shift=model.score_shift()).save(str(staging / "index"))
        np.savez(staging / "catalog.npz", item_ids=np.array(catalog.item_ids, dtype=str),
                 titles=np.array(catalog.titles, dtype=str), cold=catalog.train_counts == 0,
                 train_counts=catalog.train_counts, categories=np.array(catalog.categories, dtype=str),
                 item_row=tables.item_row, item_category_rows=tables.item_category_rows,
                 item_embedding=tables.item_embedding, item_log_popularity=tables.item_log_popularity,
                 user_attribute_rows=tables.user_attribute_rows,
                 attributes=np.array(tables.attributes, dtype=str))
        (staging / "users.txt").write_text("".join(f"{u}\n" for u in catalog.user_vocab))
        site = site_packages_path()
        ranker_version = publish_savedmodel(
            layout.triton, ranker_model_config(dim), staging / "ranker.savedmodel", site, version=version,
            extra_files={RANKER_TFLITE: row_model_tflite(staging / "ranker.savedmodel")})
        item_version = publish_savedmodel(layout.triton, item_tower_model_config(dim),
                                          staging / "item_tower.savedmodel", site, version=version)
        shutil.rmtree(staging / "item_tower.savedmodel")
        shutil.rmtree(staging / "ranker.savedmodel")
        bundle = {
            "version": version, "embedding_dim": dim, "history_length": config.history_length,
            "max_text_length": config.max_text_length, "encoder": config.encoder,
            "new_item_offset": model.new_item_offset,
            "triton": {RANKER_MODEL: ranker_version, ITEM_TOWER_MODEL: item_version},
            "ranker_inputs": RANKER_INPUTS_PACKED,
        }
        (staging / "bundle.json").write_text(json.dumps(bundle, indent=2))
        target = layout.gateway(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    metrics_path = Path(eval_dir) / "metrics.json" if eval_dir else None
    entry = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "retrieval_model": os.path.abspath(retrieval_dir),
        "ranker_model": os.path.abspath(ranker_dir),
        "triton": bundle["triton"],
        "gateway": str(target.relative_to(repo)),
        "data": _data_snapshot(ranker_meta["data"]),
        "metrics": json.loads(metrics_path.read_text()) if metrics_path and metrics_path.exists() else None,
    }
    manifest["versions"][str(version)] = entry
    manifest["current"] = version
    tmp = layout.manifest.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, layout.manifest)
    return {"version": version, **entry}
