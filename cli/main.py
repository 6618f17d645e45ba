"""The ``tworec`` command. Each subcommand is a thin layer over a stage function and its typed
config, whose fields are the subcommand's flags (tworec.settings); heavy imports (TensorFlow,
Beam) happen inside the subcommand that needs them.

A failure the user can fix (bad input, a missing or outdated artifact, too little data) ends with
one message and exit code 2, never a traceback. Without ``--verbose`` the libraries' start-up
noise goes to a log file (cli/quiet.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from tworec import settings
from tworec.errors import UserError
from tworec.progress import terminal

# Subcommands whose leftover options go to a Beam pipeline (only options Beam declares).
BEAM_COMMANDS = {"data", "pipeline", "export-embeddings"}


def _out(*args, **kwargs):
    print(*args, **kwargs, flush=True)


# --- data -------------------------------------------------------------------------------------------
def _add_data(sub, common):
    from tworec.beam.config import DataConfig

    p = sub.add_parser("data", parents=[common],
                       help="build a dataset: validated, time-split TFRecords + vocabularies + stats",
                       description="Options not listed here must be Beam pipeline options, e.g. "
                                   "--runner=DataflowRunner --project=... --region=... --temp_location=gs://...")
    p.add_argument("--out", required=True, help="output folder (local path or any Beam filesystem)")
    settings.add_flags(p, DataConfig)
    p.set_defaults(handler=_run_data)


def _run_data(args, beam_args) -> int:
    from tworec.beam.config import DataConfig

    run_data_job(settings.from_flags(DataConfig, args), args.out, beam_args)
    return 0


def run_data_job(config, out: str, beam_args) -> dict:
    """The data job with a progress line, then its summary table (also when it rejected too much)."""
    from tworec.beam.pipeline import run
    from tworec.beam.summary import TooManyRejected, format_summary
    from tworec.progress import spinner

    try:
        with spinner(f"building {config.dataset} dataset"):
            stats = run(config, out, beam_args)
    except TooManyRejected as err:
        _out(format_summary(err.stats, out))
        raise
    _out(format_summary(stats, out))
    return stats


# --- training -----------------------------------------------------------------------------------------
def _add_train_retrieval(sub, common):
    from tworec.towers.config import RetrievalConfig

    p = sub.add_parser("train-retrieval", parents=[common], help="train the two-tower retrieval model")
    p.add_argument("--data", required=True, help="a data folder written by `tworec data`")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--warm-start", help="a previous model folder to continue from (a refresh on newer data): every "
                                        "id keeps its row, new ids get new rows")
    settings.add_flags(p, RetrievalConfig)
    p.set_defaults(handler=_run_train_retrieval)


def _run_train_retrieval(args, _):
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    model = train_retrieval(args.data, args.out, settings.from_flags(RetrievalConfig, args), warm_start=args.warm_start)
    s = model.summary
    _out(f"trained {model.config.variant} ({model.config.protocol}) on {s['replicas']} replica(s) {s['devices']}: "
         f"{s['epochs_run']} epochs, {s['train_examples_per_second']:,.0f} examples/s, new-item offset "
         f"{model.new_item_offset:g} → {args.out}")
    return 0


def _add_index(sub, common):
    from tworec.towers.index import IndexConfig

    p = sub.add_parser("index", parents=[common], help="build the ScaNN index over a trained model's item embeddings")
    p.add_argument("--model", required=True, help="a model folder from train-retrieval")
    p.add_argument("--out", required=True, help="index folder")
    settings.add_flags(p, IndexConfig)
    p.set_defaults(handler=_run_index)


def _run_index(args, _):
    from tworec.towers.index import IndexConfig, ItemIndex

    index = ItemIndex.of_model(args.model, settings.from_flags(IndexConfig, args))
    index.save(args.out)
    t = index.tuning
    kind = (f"tree + AH, {t['leaves_to_search']} leaves searched, {t['reorder']:,} candidates re-scored: "
            f"recall@10 {t['recall@10']:.3f} on {t['queries']} {t['source']}" if index.is_tree else "brute force")
    shift = ", new-item offset as an extra coordinate" if index.shifted else ""
    _out(f"indexed {index.size:,} items ({index.dimension} dims{shift}, {kind}) → {args.out}")
    return 0


def _add_train_ranker(sub, common):
    from tworec.ranking.config import RankerConfig

    p = sub.add_parser("train-ranker", parents=[common],
                       help="train the ranking model on lists mined with a retrieval model")
    p.add_argument("--data", required=True, help="a data folder written by `tworec data`")
    p.add_argument("--retrieval", required=True, help="a temporal-protocol model folder from train-retrieval")
    p.add_argument("--out", required=True, help="ranker folder")
    p.add_argument("--warm-start", help="a previous ranker folder to continue from (its retrieval model warm-started "
                                        "--retrieval)")
    settings.add_flags(p, RankerConfig)
    p.set_defaults(handler=_run_train_ranker)


def _run_train_ranker(args, _):
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.train import train_ranker

    ranker = train_ranker(args.data, args.retrieval, args.out, settings.from_flags(RankerConfig, args),
                          warm_start=args.warm_start)
    s = ranker.summary
    _out(f"trained ranker on {s['lists']['train']:,} lists of {s['lists']['list_size']} "
         f"({s['replicas']} replica(s) {s['devices']}): {s['epochs_run']} epochs, "
         f"{s['train_rows_per_second']:,.0f} rows/s → {args.out}")
    return 0


# --- evaluation and export ---------------------------------------------------------------------------
def _add_eval(sub, common):
    from tworec.evaluation.config import EvalConfig

    p = sub.add_parser("eval", parents=[common], help="evaluate models against popularity (metrics.json + summary.md)")
    p.add_argument("--data", required=True)
    p.add_argument("--models", nargs="*", default=[], help="model folders from train-retrieval")
    p.add_argument("--ranker", help="a ranker folder: adds the two_stage model (retrieve 200 → rank)")
    p.add_argument("--out", required=True)
    settings.add_flags(p, EvalConfig)
    p.set_defaults(handler=_run_eval)


def _run_eval(args, _):
    from tworec.evaluation.config import EvalConfig
    from tworec.evaluation.evaluate import evaluate

    _out(evaluate(args.data, args.models, args.out, ranker_dir=args.ranker,
                  config=settings.from_flags(EvalConfig, args)).summary_markdown)
    return 0


def _add_eval_policy(sub, common):
    p = sub.add_parser("eval-policy", parents=[common],
                       help="estimate an exploration policy's click rate from logged decisions (IPS, SNIPS, DR)")
    p.add_argument("--log", required=True, help="the gateway's event log folder (REPO/events)")
    p.add_argument("--policy", required=True, help='a JSON file: {"policy": "thompson"|"greedy"|"uniform", ...any '
                                                   'exploration setting}')
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_run_eval_policy)


def _run_eval_policy(args, _):
    from tworec.evaluation.policy import eval_policy

    result = eval_policy(args.log, args.policy, args.out)
    e = result["estimates"]
    _out(f"{result['policy']} on {e['n']:,} logged decisions (logged click rate {e['logged_ctr']:.4f}): "
         f"IPS {e['ips']:.4f}, SNIPS {e['snips']:.4f}, DR {e['dr']:.4f}; effective sample size {e['ess']:,.0f}, "
         f"largest weight {e['max_weight']:.1f} → {args.out}")
    return 0


def _add_build_search(sub, common):
    p = sub.add_parser("build-search", parents=[common],
                       help="build the search indexes (BM25 + semantic) and fit their fusion and the anonymous and "
                            "personal rankings on validation queries")
    p.add_argument("--data", required=True, help="the data folder")
    p.add_argument("--retrieval", required=True, help="the retrieval model folder (the personal context)")
    p.add_argument("--ranker", help="the ranker folder trained on that retrieval model (its score is a personal "
                                    "feature; without it that feature is 0)")
    p.add_argument("--out", required=True, help="search folder")
    p.set_defaults(handler=_run_build_search)


def _run_build_search(args, _):
    from tworec.search.artifact import build_search

    build_search(args.data, args.retrieval, args.out, args.ranker, log=_out)
    return 0


def _add_eval_search(sub, common):
    p = sub.add_parser("eval-search", parents=[common],
                       help="measure search (bm25, semantic, their fusion, the anonymous and the personal ranking) on category-path and "
                            "review-summary queries, and SimilarItems' neighbourhood agreement")
    p.add_argument("--data", required=True, help="the data folder")
    p.add_argument("--out", required=True, help="writes OUT/metrics.json")
    p.add_argument("--retrieval", help="the retrieval model folder (default: beside the data folder)")
    p.add_argument("--search", help="a build-search folder (default: build one into OUT/search)")
    p.add_argument("--reviews", help="Amazon reviews file for review-summary queries (default: beside the data's input)")
    p.add_argument("--max-queries", type=int, help="test queries per protocol, the first in time (default: search/fit.py MAX_QUERIES)")
    p.add_argument("--ranker", help="the ranker folder (default: beside the data folder, when there is one)")
    p.set_defaults(handler=_run_eval_search)


def _run_eval_search(args, _):
    from tworec.evaluation.search import eval_search

    eval_search(args.data, args.out, args.retrieval, args.search, args.reviews, args.max_queries, args.ranker, log=_out)
    _out(f"→ {args.out}/metrics.json")
    return 0


def _add_export(sub, common):
    p = sub.add_parser("export", parents=[common], help="publish the next version into a deployment repository "
                                                        "(Triton models + gateway bundle + manifest)")
    p.add_argument("--retrieval", required=True, help="the content model folder the ranker was trained with")
    p.add_argument("--ranker", required=True, help="a ranker folder from train-ranker")
    p.add_argument("--repo", required=True, help="deployment repository (created if missing)")
    p.add_argument("--eval", help="an eval folder: its metrics go into the manifest")
    p.add_argument("--index", help="a `tworec index` folder: the gateway's index is built with its settings")
    p.add_argument("--search", help="a `tworec build-search` folder: the version serves Search with it")
    p.set_defaults(handler=_run_export)


def _run_export(args, _):
    from tworec.export.repository import export_repository

    entry = export_repository(args.retrieval, args.ranker, args.repo, args.eval, args.index, args.search)
    _out(f"published version {entry['version']} → {args.repo} (Triton models {entry['triton']}, "
         f"gateway {entry['gateway']})")
    return 0


def _add_export_embeddings(sub, common):
    p = sub.add_parser("export-embeddings", parents=[common],
                       help="Beam job: embeddings of every item and every user's latest state to sharded "
                            "TFRecord + Parquet",
                       description="Options not listed here must be Beam pipeline options (e.g. --runner=...).")
    p.add_argument("--data", required=True, help="the data folder (items and interactions)")
    p.add_argument("--repo", required=True, help="deployment repository")
    p.add_argument("--version", type=int, help="exported version (default: the current one)")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_run_export_embeddings)


def _run_export_embeddings(args, beam_args):
    from tworec.export.embeddings import export_embeddings
    from tworec.progress import spinner

    with spinner("exporting embeddings"):
        version = export_embeddings(args.data, args.repo, args.out, args.version, beam_args)
    _out(f"embeddings of version {version} → {args.out}/items/, {args.out}/users/ (TFRecord + Parquet)")
    return 0


# --- serving ------------------------------------------------------------------------------------------
def _add_serve(sub, common):
    from tworec.serving.config import ServeConfig

    p = sub.add_parser("serve", parents=[common], help="start Triton and the gRPC gateway on a deployment repository")
    settings.add_flags(p, ServeConfig)
    p.set_defaults(handler=_run_serve, noise_to_terminal=True)


def _run_serve(args, _):
    import logging

    from tworec.serving.config import ServeConfig
    from tworec.serving.server import serve_forever

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve_forever(settings.from_flags(ServeConfig, args))


def _add_recommend(sub, common):
    p = sub.add_parser("recommend", parents=[common], help="call a running gateway and print the answer as a table")
    p.add_argument("--address", required=True, help="host:port printed by `tworec serve`")
    p.add_argument("--user", default="", help="user id (may be unknown)")
    p.add_argument("--history", nargs="*", default=[], help="recent item ids, most recent first")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")
    p.add_argument("--token", help="bearer token (or set TWOREC_TOKEN)")
    p.add_argument("--tls-ca", help="PEM CA that signed the gateway's certificate: connect with TLS")
    p.set_defaults(handler=_run_recommend)


def _run_recommend(args, _):
    import grpc

    from tworec.serving.client import RecommenderClient, format_table

    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    with RecommenderClient(args.address, timeout_s=args.timeout, token=args.token or os.environ.get("TWOREC_TOKEN"),
                           root_certificates=ca) as client:
        try:
            response = client.recommend(args.user, args.history, args.k, args.exclude)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    _out(format_table(response, f"user {args.user or '(anonymous)'} · history {args.history or '[]'}"))
    return 0


def _add_demo(sub, common):
    p = sub.add_parser("demo", parents=[common], help="start the services on a repository, make real gRPC calls, "
                                                      "shut down")
    p.add_argument("--repo", required=True)
    p.set_defaults(handler=lambda args, _: __import__("tworec.serving.demo", fromlist=["run_demo"]).run_demo(args.repo))


# --- the whole run, and the report -------------------------------------------------------------------
def _add_pipeline(sub, common):
    from tworec.cli.pipeline import STAGES, PipelineConfig

    p = sub.add_parser(
        "pipeline", parents=[common],
        help="run every stage (data → retrieval → index → ranker → eval → export), skipping finished ones",
        description="Every setting of every stage is a flag: the data job's as in `tworec data`, the others "
                    "prefixed with their stage (--retrieval-epochs, --ranker-epochs, ...), and any of them as "
                    "--set stage.field=value (e.g. --set retrieval.temperature=0.1). Options not listed here "
                    "must be Beam pipeline options, for the data job.")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="set any setting, e.g. retrieval.temperature=0.1 (repeatable; applied after the flags)")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    settings.add_flags(p, PipelineConfig)
    p.set_defaults(handler=_run_pipeline)


def _run_pipeline(args, beam_args):
    from tworec.cli.pipeline import PipelineConfig, run_pipeline

    config = settings.from_flags(PipelineConfig, args)
    for assignment in args.overrides:
        config = settings.override(config, assignment)
    run_pipeline(args.out, config, beam_args, until=args.until, log=_out)
    return 0


def _add_report(sub, common):
    from tworec.report.config import ReportConfig

    p = sub.add_parser("report", parents=[common],
                       help="write RUN/report/index.html: metrics table, HitRate@K curves, popularity bias, example "
                            "users, ScaNN and serving latency figures")
    settings.add_flags(p, ReportConfig)
    p.set_defaults(handler=_run_report)


def _run_report(args, _):
    from tworec.report.build import build_report
    from tworec.report.config import ReportConfig

    _out(f"report: {build_report(settings.from_flags(ReportConfig, args))}")
    return 0


# --- the command --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show the libraries' own log lines (TensorFlow, Beam, gRPC) and full tracebacks")
    parser = argparse.ArgumentParser(prog="tworec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_train_retrieval, _add_index, _add_build_search, _add_train_ranker, _add_eval,
                _add_eval_policy, _add_eval_search, _add_export,
                _add_export_embeddings, _add_serve, _add_recommend, _add_pipeline, _add_report, _add_demo):
        add(sub, common)
    return parser


def _own_flags(parser, command) -> list:
    subparser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [s for a in subparser._actions for s in a.option_strings]


def main(argv=None) -> int:
    from tworec.cli.quiet import before_imports, quiet

    argv = sys.argv[1:] if argv is None else argv
    before_imports("--verbose" in argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        own = _own_flags(parser, args.command)
        if args.command in BEAM_COMMANDS:
            from tworec.cli.beam_options import unknown_options

            unknown = unknown_options(extra, own)
        else:
            unknown = [(x, settings.closest(x.split("=")[0], own)) for x in extra]
        if unknown:
            parser.error("unknown option " + "; ".join(f"{option}{hint}" for option, hint in unknown))
    command = args.command
    with quiet(args.verbose or getattr(args, "noise_to_terminal", False), command) as noise:
        try:
            return args.handler(args, extra)
        except KeyboardInterrupt:
            print(f"tworec {command}: interrupted", file=terminal())
            return 130
        except Exception as err:  # noqa: BLE001 - the one place errors become messages
            if args.verbose:
                raise
            if isinstance(err, (UserError, FileNotFoundError)):
                print(f"tworec {command}: {err}", file=terminal())
                return 2
            traceback.print_exc()  # into the noise log, kept for the report
            noise.keep = True
            print(f"tworec {command}: unexpected error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                  f"\nthe traceback is in {noise.path}", file=terminal())
            return 1


if __name__ == "__main__":
    sys.exit(main())
