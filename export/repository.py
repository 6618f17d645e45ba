"""``tworec export``: publish the next version of a retrieval model and its ranker into a
deployment repository (export/artifact.py describes its layout).

Version N+1 is written everywhere first (the Triton models, then the gateway folder under a
staging name, renamed into place), and manifest.json switches last, so a running gateway and
Triton keep serving N until N+1 is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tworec import contract
from tworec.export.artifact import ITEM_TOWER_MODEL, RANKER_MODEL, DeploymentRepository, GatewayArtifact
from tworec.export.savedmodels import export_item_tower, export_query_tower, query_tower_tflite, row_model_tflite
from tworec.export.triton_repo import ModelConfig, TensorSpec, publish_savedmodel
from tworec.layout import DataLayout

# The ranker's signature is XLA-compiled for these row counts when Triton loads it (a request pads
# up to the next one; more rows run in chunks of the largest): a few small ones for short lists,
# then multiples of the gateway's default 200 candidates, which batches of whole requests fill
# exactly (1,000 candidates = 800 + 200).
RANKER_ROW_BUCKETS = (8, 64, 200, 400, 800)
# The ranker's TFLite conversion, in its Triton version folder: what the Python backend runs.
RANKER_TFLITE = "model.tflite"


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


def data_snapshot(data_dir: str) -> dict:
    """What the manifest records of the data a version was trained on."""
    stats_path = Path(DataLayout(data_dir).stats)
    snapshot = {"path": os.path.abspath(data_dir)}
    if stats_path.exists():
        raw = stats_path.read_bytes()
        stats = json.loads(raw)
        snapshot.update(stats_sha256=hashlib.sha256(raw).hexdigest(), dataset=stats["dataset"],
                        splits={k: v["examples"] for k, v in stats["splits"].items()})
    return snapshot


def export_repository(retrieval_dir: str, ranker_dir: str, repo: str, eval_dir: str | None = None,
                      index_dir: str | None = None, search_dir: str | None = None) -> dict:
    """Publishes the next version; returns its manifest entry with its number (``version``). The
    gateway's index is built with the settings of ``index_dir`` (a ``tworec index`` folder; default
    IndexConfig's defaults), for the items the ranker's tables hold. ``search_dir`` (a
    ``tworec build-search`` folder over the same catalog) is copied in: the version serves Search."""
    from tworec.evaluation.artifact import EvalResults
    from tworec.export.triton_repo import site_packages_path
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.model import save_scorer
    from tworec.towers.artifact import RetrievalArtifact

    repository = DeploymentRepository(repo)
    ranker = RankerArtifact.load(ranker_dir)
    if os.path.realpath(ranker.retrieval) != os.path.realpath(retrieval_dir):
        raise ValueError(f"the ranker in {ranker_dir} was trained on candidates of {ranker.retrieval}, "
                         f"not {retrieval_dir}: export the retrieval model it was trained with")
    retrieval_artifact = RetrievalArtifact.load(retrieval_dir)
    retrieval = retrieval_artifact.restore()
    scorer, tables = ranker.restore()
    dim = retrieval.config.embedding_dim
    version = repository.next_version()
    staging = Path(repo) / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        # The Triton models: the ranker saved again from its weights (its signatures as this code's
        # contract serves them) and the item tower, for items upserted at serving time.
        save_scorer(scorer, dim, staging / "ranker.savedmodel")
        export_item_tower(retrieval.model, retrieval.config, staging / "item_tower.savedmodel")
        site = site_packages_path()
        triton = {
            RANKER_MODEL: publish_savedmodel(
                repository.triton, ranker_model_config(dim), staging / "ranker.savedmodel", site, version=version,
                extra_files={RANKER_TFLITE: row_model_tflite(staging / "ranker.savedmodel")}),
            ITEM_TOWER_MODEL: publish_savedmodel(repository.triton, item_tower_model_config(dim),
                                                 staging / "item_tower.savedmodel", site, version=version),
        }
        gateway = staging / "gateway"
        gateway.mkdir()

        def query_tower(savedmodel, tflite):
            export_query_tower(retrieval.model, retrieval.config, savedmodel)
            Path(tflite).write_bytes(query_tower_tflite(savedmodel))

        index_config = None
        if index_dir:
            from tworec import settings
            from tworec.towers.index import IndexConfig, ItemIndex

            index_config = settings.from_dict(IndexConfig, ItemIndex.described(index_dir)["config"])
        GatewayArtifact.save(gateway, version, retrieval, retrieval_artifact.live_weight, retrieval_artifact.click_prior,
                             tables, query_tower, triton, index_config, retrieval_artifact.held_out_queries)
        if search_dir:
            from tworec.search.artifact import SearchArtifact

            SearchArtifact.load(search_dir)  # refuses a missing or other-format folder before copying
            shutil.copytree(search_dir, gateway / GatewayArtifact.SEARCH)
        target = repository.gateway_path(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(gateway, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = {
        "retrieval_model": os.path.abspath(retrieval_dir),
        "ranker_model": os.path.abspath(ranker_dir),
        "triton": triton,
        "gateway": str(target.relative_to(repo)),
        "data": data_snapshot(ranker.data),
        "metrics": EvalResults.load(eval_dir).metrics if eval_dir else None,
    }
    repository.publish(version, entry)
    return {"version": version, **entry}
