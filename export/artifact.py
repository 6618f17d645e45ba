"""The deployment repository (what ``tworec serve`` runs), owned by two classes: the only code that
names or reads its files.

``DeploymentRepository``  REPO/
    manifest.json        kind and format version, every version (what it was built from, eval
                         metrics, data snapshot, creation time) and "current", the live one
    triton/              the Triton model repository (export/triton_repo.py owns its layout)
    gateway/<N>/         one ``GatewayArtifact`` per version

``GatewayArtifact``  REPO/gateway/<N>/, what the gateway process loads for version N:
    bundle.json          kind and format version, sizes, the Triton model versions it pairs with
    query_tower.savedmodel/   the query tower
    query_tower.tflite   its TFLite conversion, checked against it: what the gateway runs
    index/               the ScaNN index (towers/index.py ItemIndex owns it)
    tables.npz           the ranker's feature tables (ranking/features.py RankerTables owns it)
    items.npz            catalog rows: ids, titles, train counts; and the category vocabulary
    users.txt            user vocabulary (row = line number + 1)

An export writes version N+1 everywhere and switches manifest.json last (atomically), so a running
gateway and Triton keep serving N until N+1 is complete.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec.artifacts import ArtifactError, DescribedFolder, read_description, write_description
from tworec.export.triton_repo import SAVEDMODEL_DIR, versions
from tworec.live.exploration import ClickPrior

RANKER_MODEL = "ranker"  # Triton model names
ITEM_TOWER_MODEL = "item_tower"


@dataclass
class CatalogRows:
    """A gateway version's catalog: per row its item id, title and train count (0: cold or new),
    plus the category vocabulary (category row = index + 1)."""

    item_ids: list
    titles: list
    train_counts: np.ndarray
    categories: list


class GatewayArtifact(DescribedFolder):
    KIND = "tworec gateway version"
    VERSION = 2  # its live_weight and ranker read the live-count share (live/decay.py)
    REMEDY = "re-export it with `tworec export`"
    DESCRIPTION = "bundle.json"
    QUERY_TOWER = "query_tower.savedmodel"
    QUERY_TOWER_TFLITE = "query_tower.tflite"
    INDEX = "index"
    SEARCH = "search"  # a search.artifact.SearchArtifact folder; absent: the version serves no Search
    ITEMS = "items.npz"
    USERS = "users.txt"

    def __init__(self, path, described: dict):
        self.path = Path(path)
        self.version = described["version"]
        self.embedding_dim = described["embedding_dim"]
        self.history_length = described["history_length"]
        self.max_text_length = described["max_text_length"]
        self.encoder = described["encoder"]
        # What an item embedded from its text alone (an upsert) adds to its retrieval score.
        self.new_item_offset = float(described["new_item_offset"])
        # The live-count term: its weight in the retrieval score, and the half-life the counts decay with.
        self.live_weight = float(described["live_weight"])
        self.live_half_life_s = float(described["live_half_life_s"])
        # The exploration slot's prior (live/exploration.py); none: no slot, as in versions exported
        # before the slot existed.
        prior = described.get("click_prior")
        self.click_prior = ClickPrior(**prior) if prior else None
        self.triton = described["triton"]  # Triton model name → the version this one pairs with
        self.described = described

    @classmethod
    def save(cls, path, version: int, retrieval, live_weight: float, click_prior, tables, export_query_tower,
             triton_versions: dict, index_config=None, held_out_queries=None) -> "GatewayArtifact":
        """Writes version ``version`` of the gateway into the empty folder ``path``: ``retrieval``
        (a towers.artifact.RestoredRetrieval), its ``live_weight`` and ``click_prior``, the ranker's
        ``tables``, and
        ``export_query_tower(savedmodel_path, tflite_path)`` writes the query tower's two files. The
        index is built with ``index_config`` (towers.index.IndexConfig; default its defaults), tuned
        on ``held_out_queries``."""
        from tworec.towers.index import IndexConfig, ItemIndex

        path = Path(path)
        model, catalog, config = retrieval.model, retrieval.catalog, retrieval.config
        export_query_tower(path / cls.QUERY_TOWER, path / cls.QUERY_TOWER_TFLITE)
        ItemIndex.build(tables.item_embedding, catalog.item_ids, index_config or IndexConfig(),
                        score_shift=model.score_shift(), queries=held_out_queries).save(str(path / cls.INDEX))
        tables.save(path)
        np.savez(path / cls.ITEMS, item_ids=np.array(catalog.item_ids, dtype=str),
                 titles=np.array(catalog.titles, dtype=str), train_counts=catalog.train_counts,
                 categories=np.array(catalog.categories, dtype=str))
        (path / cls.USERS).write_text("".join(f"{u}\n" for u in catalog.user_vocab), encoding="utf-8")
        described = {"version": version, "embedding_dim": config.embedding_dim,
                     "history_length": config.history_length, "max_text_length": config.max_text_length,
                     "encoder": config.encoder, "new_item_offset": float(model.new_item_offset),
                     "live_weight": float(live_weight), "live_half_life_s": float(config.live_half_life_s),
                     "click_prior": dataclasses.asdict(click_prior) if click_prior else None,
                     "triton": dict(triton_versions)}
        cls.describe(path, described)
        return cls(path, described)

    @classmethod
    def load(cls, path) -> "GatewayArtifact":
        return cls(path, cls.described(path))

    @property
    def query_tower_savedmodel(self) -> Path:
        return self.path / self.QUERY_TOWER

    def query_tower_tflite(self) -> bytes:
        return (self.path / self.QUERY_TOWER_TFLITE).read_bytes()

    def index(self):
        from tworec.towers.index import ItemIndex

        return ItemIndex.load(str(self.path / self.INDEX))

    def search(self):
        """The version's search folder (search.artifact.SearchArtifact), or None."""
        from tworec.search.artifact import SearchArtifact

        path = self.path / self.SEARCH
        return SearchArtifact.load(path) if SearchArtifact.exists(path) else None

    def tables(self):
        from tworec.ranking.features import RankerTables

        return RankerTables.load(self.path)

    def catalog(self) -> CatalogRows:
        with np.load(self.path / self.ITEMS, allow_pickle=False) as z:
            return CatalogRows([str(i) for i in z["item_ids"]], [str(t) for t in z["titles"]],
                               z["train_counts"].copy(), [str(c) for c in z["categories"]])

    def users(self) -> list:
        return (self.path / self.USERS).read_text(encoding="utf-8").split("\n")[:-1]


class DeploymentRepository:
    KIND = "tworec deployment repository"
    VERSION = 1
    MANIFEST = "manifest.json"
    TRITON = "triton"
    GATEWAY = "gateway"

    def __init__(self, root):
        self.root = Path(root)

    @property
    def triton(self) -> Path:
        return self.root / self.TRITON

    def gateway_path(self, version: int) -> Path:
        return self.root / self.GATEWAY / str(version)

    def gateway(self, version: int) -> GatewayArtifact:
        return GatewayArtifact.load(self.gateway_path(version))

    def triton_savedmodel(self, model: str, version: int) -> Path:
        """The SavedModel of one Triton model version."""
        return self.triton / model / str(version) / SAVEDMODEL_DIR

    def manifest(self) -> dict:
        """{"current": version or None, "versions": {version: entry}}."""
        path = self.root / self.MANIFEST
        if not path.exists():
            return {"current": None, "versions": {}}
        return read_description(path, self.KIND, self.VERSION, "re-export into a new repository with `tworec export`")

    def current_version(self) -> int:
        if not self.root.is_dir():
            raise ArtifactError(f"model repository {self.root} does not exist: run `tworec export --repo {self.root}` "
                                f"(or `tworec pipeline`) first")
        current = self.manifest().get("current")
        if current is None:
            raise ArtifactError(f"{self.root} has no {self.MANIFEST} with a current version: run "
                                f"`tworec export --repo {self.root}`")
        return int(current)

    def exists(self) -> bool:
        try:
            return self.manifest().get("current") is not None
        except ArtifactError:
            return False

    def next_version(self) -> int:
        known = [int(v) for v in self.manifest()["versions"]] + versions(self.triton / RANKER_MODEL)
        return max(known, default=0) + 1

    def publish(self, version: int, entry: dict) -> None:
        """Adds ``entry`` as ``version`` and makes it current, in one atomic replace."""
        manifest = self.manifest()
        manifest["versions"][str(version)] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
        manifest["current"] = version
        write_description(self.root / self.MANIFEST, self.KIND, self.VERSION, manifest)

    def data_folder(self, version: int | None = None) -> str:
        """The data folder a version was trained on."""
        manifest = self.manifest()
        version = version or manifest["current"]
        return manifest["versions"][str(version)]["data"]["path"]

