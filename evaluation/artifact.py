"""An eval folder, owned by ``EvalResults``: the only code that names or reads its files.

    eval.json     kind and format version, the data folder and the models evaluated
    metrics.json  {protocol: {model: {segment: {"hitrate@10", "hitrate@50", "hitrate@100", "ndcg@10", "count"}}}}
    summary.md    the same as Markdown tables
    details.npz   temporal protocol, what the report draws: per query its target row, user id,
                  recent history rows and segment masks; per model the target's rank and top rows
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec.artifacts import DescribedFolder
from tworec.towers.scoring import JudgedSplit, Outcome


@dataclass
class Details:
    """``details.npz`` read back: the test queries and every model's outcome on them."""

    targets: np.ndarray
    recent_history: np.ndarray
    user_ids: np.ndarray
    segments: dict
    outcomes: dict


class EvalResults(DescribedFolder):
    KIND = "tworec eval results"
    VERSION = 1
    REMEDY = "run `tworec eval`"
    DESCRIPTION = "eval.json"
    METRICS = "metrics.json"
    SUMMARY = "summary.md"
    DETAILS = "details.npz"

    def __init__(self, path, metrics: dict, described: dict):
        self.path = Path(path)
        self.metrics = metrics
        self.described = described

    @classmethod
    def save(cls, path, metrics: dict, summary_markdown: str, judged: JudgedSplit, outcomes: dict,
             data: str, models: list) -> "EvalResults":
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"targets": judged.targets, "recent_history": judged.recent_history,
                  "user_ids": np.array([e["user_id"] for e in judged.examples], dtype=str)}
        arrays.update({f"segment_{name}": mask for name, mask in judged.segments.items()})
        for model, outcome in outcomes.items():
            arrays[f"ranks_{model}"] = outcome.ranks
            arrays[f"top_{model}"] = outcome.top
        np.savez_compressed(path / cls.DETAILS, **arrays)
        (path / cls.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (path / cls.SUMMARY).write_text(summary_markdown)
        described = {"data": str(data), "models": list(models)}
        cls.describe(path, described)
        return cls(path, metrics, described)

    @classmethod
    def load(cls, path) -> "EvalResults":
        path = Path(path)
        described = cls.described(path)
        return cls(path, json.loads((path / cls.METRICS).read_text()), described)

    @property
    def summary_markdown(self) -> str:
        return (self.path / self.SUMMARY).read_text()

    def details(self) -> Details:
        with np.load(self.path / self.DETAILS, allow_pickle=False) as f:
            return Details(f["targets"], f["recent_history"], f["user_ids"],
                           {k[len("segment_"):]: f[k] for k in f.files if k.startswith("segment_")},
                           {k[len("ranks_"):]: Outcome(f[k], f["top_" + k[len("ranks_"):]])
                            for k in f.files if k.startswith("ranks_")})
