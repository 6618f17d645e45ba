"""``tworec pipeline``: every stage in order into one run folder, skipping stages already done.

    data → retrieval (content) → retrieval_id_only (baseline) → index → ranker → eval → repo

A stage is done when its completion file exists; each stage writes that file last, so a run that
was interrupted resumes at the stage it was in.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tworec.layout import RunLayout


@dataclass(frozen=True)
class PipelineConfig:
    dataset: str = "synthetic"
    input: str | None = None
    synthetic_interactions: int = 20_000
    retrieval_epochs: int | None = None  # None: RetrievalConfig's default
    encoder_mode: str = "frozen"  # the content model's: frozen, or finetune (top encoder layers train)
    ranker_epochs: int | None = None
    beam_args: list = field(default_factory=list)


def stages(run: RunLayout):
    """(name, completion file, output) per stage, in order."""
    return [
        ("data", Path(run.data.stats), run.data.root),
        ("retrieval", Path(run.retrieval) / "model.json", run.retrieval),
        ("retrieval_id_only", Path(run.retrieval_id_only) / "model.json", run.retrieval_id_only),
        ("index", Path(run.index) / "tworec_index.json", run.index),
        ("ranker", Path(run.ranker) / "ranker.json", run.ranker),
        ("eval", Path(run.eval) / "metrics.json", run.eval),
        ("export", Path(run.repo) / "manifest.json", run.repo),
    ]


def run_pipeline(out: str, config: PipelineConfig = PipelineConfig(), log=print) -> dict:
    run = RunLayout(os.path.abspath(out))
    actions = {
        "data": lambda: _data(run, config),
        "retrieval": lambda: _retrieval(run, run.retrieval, "content", config),
        "retrieval_id_only": lambda: _retrieval(run, run.retrieval_id_only, "id_only", config),
        "index": lambda: _index(run),
        "ranker": lambda: _ranker(run, config),
        "eval": lambda: _eval(run),
        "export": lambda: _export(run),
    }
    done = {}
    for name, marker, output in stages(run):
        if marker.exists():
            log(f"[skip] {name:<18} already complete → {output}")
        else:
            started = time.time()
            log(f"[run ] {name:<18} …")
            actions[name]()
            log(f"[done] {name:<18} {time.time() - started:6.1f}s → {output}")
        done[name] = output
    return done


def _data(run, config):
    from tworec.beam.pipeline import DataConfig, run as run_data
    from tworec.beam.sources.synthetic import SyntheticConfig

    run_data(DataConfig(dataset=config.dataset, input=config.input,
                        synthetic=SyntheticConfig(interactions=config.synthetic_interactions)),
             run.data.root, config.beam_args)


def _retrieval(run, out, variant, config):
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    overrides = {"epochs": config.retrieval_epochs} if config.retrieval_epochs else {}
    if variant == "content":
        overrides["encoder_mode"] = config.encoder_mode
    train_retrieval(run.data.root, out, RetrievalConfig(variant=variant, **overrides))


def _index(run):
    from tworec.towers.index import IndexConfig, ItemIndex

    ItemIndex.of_model(run.retrieval, IndexConfig(num_neighbors=200)).save(run.index)


def _ranker(run, config):
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.train import train_ranker

    overrides = {"epochs": config.ranker_epochs} if config.ranker_epochs else {}
    train_ranker(run.data.root, run.retrieval, run.ranker, RankerConfig(**overrides))


def _eval(run):
    from tworec.evaluation.evaluate import evaluate

    evaluate(run.data.root, [run.retrieval, run.retrieval_id_only], run.eval, ranker_dir=run.ranker)


def _export(run):
    from tworec.export.repository import export_repository

    export_repository(run.retrieval, run.ranker, run.repo, run.eval)
