"""``tworec pipeline``: every stage in order into one run folder, skipping stages already done.

    data → retrieval (content) → retrieval_id_only (baseline) → index → ranker → eval → export

A stage is done when its artifact is complete (each artifact class writes its description last),
so an interrupted run resumes at the stage it was in. Every stage's settings come from one
``PipelineConfig``: the data job's exactly as ``tworec data`` takes them, the others under their
stage's name.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tworec.beam.config import DataConfig
from tworec.layout import RunLayout
from tworec.evaluation.config import EvalConfig
from tworec.ranking.config import RankerConfig
from tworec import settings
from tworec.settings import section
from tworec.towers.config import RetrievalConfig
from tworec.towers.index import IndexConfig

STAGES = ("data", "retrieval", "retrieval_id_only", "index", "ranker", "search", "eval", "export")


@dataclass(frozen=True)
class PipelineConfig:
    data: DataConfig = section(DataConfig, "the data job")
    retrieval: RetrievalConfig = section(RetrievalConfig, "retrieval (the id_only baseline trains with the same "
                                                          "settings, without text)", prefix="retrieval_")
    index: IndexConfig = section(IndexConfig, "the ScaNN index", prefix="index_")
    ranker: RankerConfig = section(RankerConfig, "the ranker", prefix="ranker_")
    eval: EvalConfig = section(EvalConfig, "the evaluation", prefix="eval_")


def _same_settings(output: str, built, wanted) -> bool:
    """True: the finished stage used ``wanted``; a stage built with other settings is an error
    rather than silently reused."""
    built, wanted = settings.to_dict(built), settings.to_dict(wanted)
    if built != wanted:
        changed = [k for k in wanted if built.get(k) != wanted[k]]
        raise settings.SettingError(
            f"{output} was built with other settings ({', '.join(f'{k}: {built.get(k)} → {wanted[k]}' for k in changed)})"
            f": remove it to rebuild, or use another --out")
    return True


def _done(run: RunLayout, config: PipelineConfig) -> dict:
    """Per stage: a check whether its output is complete and was built with these settings."""
    from tworec.beam.sources import known_defects
    from tworec.beam.summary import rejection_problem
    from tworec.evaluation.artifact import EvalResults
    from tworec.export.artifact import DeploymentRepository
    from tworec.ranking.artifact import RankerArtifact
    from tworec.search.artifact import SearchArtifact
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.index import ItemIndex

    def data():
        if not Path(run.data.stats).exists():
            return False
        stats = json.loads(Path(run.data.stats).read_text())
        built = settings.from_dict(DataConfig, stats["config"])
        if rejection_problem(stats, built.max_rejected_share, known_defects(built.dataset)):
            return False  # that job failed its check: run it again (with the settings given now)
        return _same_settings(run.data.root, built, config.data)

    def retrieval(path, wanted):
        return RetrievalArtifact.exists(path) and _same_settings(path, RetrievalArtifact.load(path).config, wanted)

    return {
        "data": data,
        "retrieval": lambda: retrieval(run.retrieval, config.retrieval),
        "retrieval_id_only": lambda: retrieval(run.retrieval_id_only, id_only(config)),
        "index": lambda: ItemIndex.exists(run.index) and _same_settings(run.index, ItemIndex.load(run.index).config,
                                                                          config.index),
        "search": lambda: SearchArtifact.exists(run.search),
        "ranker": lambda: RankerArtifact.exists(run.ranker) and _same_settings(
            run.ranker, RankerArtifact.load(run.ranker).config, config.ranker),
        "eval": lambda: EvalResults.exists(run.eval),
        "export": lambda: DeploymentRepository(run.repo).exists(),
    }


def id_only(config: PipelineConfig) -> RetrievalConfig:
    """The baseline's settings: the product's, without text."""
    return dataclasses.replace(config.retrieval, variant="id_only")


def _outputs(run: RunLayout) -> dict:
    return {"data": run.data.root, "retrieval": run.retrieval, "retrieval_id_only": run.retrieval_id_only,
            "index": run.index, "search": run.search, "ranker": run.ranker, "eval": run.eval, "export": run.repo}


def run_pipeline(out: str, config: PipelineConfig = PipelineConfig(), beam_args=(), until: str | None = None,
                 log=print) -> dict:
    """Runs the stages not yet done, up to ``until`` (every stage when None); returns
    {stage: output folder}."""
    run = RunLayout(os.path.abspath(out))
    actions = {
        "data": lambda: _data(run, config, beam_args, log),
        "retrieval": lambda: _retrieval(run, run.retrieval, config.retrieval),
        "retrieval_id_only": lambda: _retrieval(run, run.retrieval_id_only, id_only(config)),
        "index": lambda: _index(run, config.index),
        "search": lambda: _search(run, log),
        "ranker": lambda: _ranker(run, config.ranker),
        "eval": lambda: _eval(run, config.eval),
        "export": lambda: _export(run),
    }
    done, outputs = _done(run, config), _outputs(run)
    finished = {}
    for name in STAGES:
        if done[name]():
            log(f"[skip] {name:<18} already complete → {outputs[name]}")
        else:
            started = time.time()
            log(f"[run ] {name:<18} …")
            actions[name]()
            log(f"[done] {name:<18} {time.time() - started:6.1f}s → {outputs[name]}")
        finished[name] = outputs[name]
        if name == until:
            break
    return finished


def _data(run, config, beam_args, log):
    from tworec.cli.main import run_data_job

    run_data_job(config.data, run.data.root, beam_args)


def _retrieval(run, out, config):
    from tworec.towers.train import train_retrieval

    train_retrieval(run.data.root, out, config)


def _index(run, config):
    from tworec.towers.index import ItemIndex

    ItemIndex.of_model(run.retrieval, config).save(run.index)


def _search(run, log):
    from tworec.search.artifact import build_search

    build_search(run.data.root, run.retrieval, run.search, run.ranker, log)


def _ranker(run, config):
    from tworec.ranking.train import train_ranker

    train_ranker(run.data.root, run.retrieval, run.ranker, config)


def _eval(run, config):
    from tworec.evaluation.evaluate import evaluate

    evaluate(run.data.root, [run.retrieval, run.retrieval_id_only], run.eval, ranker_dir=run.ranker, config=config)


def _export(run):
    from tworec.export.repository import export_repository

    export_repository(run.retrieval, run.ranker, run.repo, run.eval, run.index, run.search)
