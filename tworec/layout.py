"""Where every stage reads and writes inside a run folder, defined once.

    RUN/data/        the data pipeline's output (DataLayout)
    RUN/retrieval/   the content two-tower model (tworec.towers.train)
    RUN/retrieval_id_only/  the no-text baseline
    RUN/index/       ScaNN index + id map
    RUN/search/      search: BM25 + semantic indexes, fusion and personal weights
    RUN/ranker/      ranking model + its serving SavedModel
    RUN/eval/        metrics.json, summary.md
    RUN/repo/        deployment repository: Triton models, gateway bundles, manifest
    RUN/embeddings/  batch-exported embeddings
    RUN/report/      HTML report
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tworec.contract import Split


def _join(root: str, *parts: str) -> str:
    # Plain string joins keep gs:// and other Beam filesystem paths intact.
    return "/".join([root.rstrip("/"), *parts])


@dataclass(frozen=True)
class DataLayout:
    root: str

    def split_dir(self, split: Split | str) -> str:
        return _join(self.root, Split(split).value)

    def split_prefix(self, split: Split | str) -> str:
        return _join(self.split_dir(split), "part")

    def split_pattern(self, split: Split | str) -> str:
        return _join(self.split_dir(split), "part-*.tfrecord.gz")

    @property
    def items_prefix(self) -> str:
        return _join(self.root, "items", "part")

    @property
    def items_pattern(self) -> str:
        return _join(self.root, "items", "part-*.tfrecord.gz")

    @property
    def users_prefix(self) -> str:
        return _join(self.root, "users", "part")

    @property
    def users_pattern(self) -> str:
        return _join(self.root, "users", "part-*.tfrecord.gz")

    def vocab(self, name: str) -> str:
        """Vocabulary file, one token per line, most frequent first: users, items, categories."""
        return _join(self.root, "vocab", f"{name}.txt")

    @property
    def popularity(self) -> str:
        """item_id<TAB>count over the train split, most popular first."""
        return _join(self.root, "popularity.tsv")

    @property
    def cold_items(self) -> str:
        return _join(self.root, "cold_items.txt")

    @property
    def stats(self) -> str:
        return _join(self.root, "stats.json")

    @property
    def scratch(self) -> str:
        """The data job's working files while it runs (hidden: no reader's pattern matches it)."""
        return _join(self.root, ".scratch")

    def split_examples(self, split: Split | str) -> int | None:
        """Examples the data job wrote to ``split`` (stats.json), or None without stats."""
        import json

        try:
            with open(self.stats) as handle:
                return json.load(handle)["splits"][Split(split).value]["examples"]
        except (OSError, KeyError, ValueError):
            return None

    @property
    def dead_letter_prefix(self) -> str:
        return _join(self.root, "dead_letter", "part")

    @property
    def dead_letter_pattern(self) -> str:
        return _join(self.root, "dead_letter", "part-*.jsonl")


@dataclass(frozen=True)
class RunLayout:
    root: str

    @property
    def data(self) -> DataLayout:
        return DataLayout(os.path.join(self.root, "data"))

    @property
    def retrieval(self) -> str:
        return os.path.join(self.root, "retrieval")

    @property
    def retrieval_id_only(self) -> str:
        return os.path.join(self.root, "retrieval_id_only")

    @property
    def index(self) -> str:
        return os.path.join(self.root, "index")

    @property
    def search(self) -> str:
        return os.path.join(self.root, "search")

    @property
    def ranker(self) -> str:
        return os.path.join(self.root, "ranker")

    @property
    def eval(self) -> str:
        return os.path.join(self.root, "eval")

    @property
    def repo(self) -> str:
        return os.path.join(self.root, "repo")

    @property
    def embeddings(self) -> str:
        return os.path.join(self.root, "embeddings")

    @property
    def report(self) -> str:
        return os.path.join(self.root, "report")
