"""The ``tworec`` command. Each subcommand is a thin layer over a stage function and its typed
config; heavy imports (TensorFlow, Beam) happen inside the subcommand that needs them."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _add_data(sub):
    p = sub.add_parser(
        "data", help="build a dataset: validated, time-split TFRecords + vocabularies + stats",
        description="Any option not listed here is passed to Beam as a pipeline option, e.g. "
                    "--runner=DataflowRunner --project=... --region=... --temp_location=gs://...")
    p.add_argument("--dataset", default="synthetic",
                   choices=("synthetic", "movielens-100k", "amazon-2018", "csv"))
    p.add_argument("--input", help="folder of the raw files (defaults for movielens-100k/amazon-2018)")
    p.add_argument("--out", required=True, help="output folder (local path or any Beam filesystem)")
    p.add_argument("--history-length", type=int, default=None, help="max history items (default 50)")
    p.add_argument("--shards", type=int, default=0, help="TFRecord files per split (0: one per 200k examples)")
    p.add_argument("--seed", type=int, default=42, help="seed of the cold-item and TFRS splits")
    p.add_argument("--cold-item-fraction", type=float, default=0.1)
    p.add_argument("--train-fraction", type=float, default=0.8)
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--synthetic-interactions", type=int, default=20_000,
                   help="size of the synthetic dataset (10k … 10M+)")
    p.add_argument("--synthetic-seed", type=int, default=7)
    p.add_argument("--rating-range", default="0,5", help="allowed ratings for --dataset csv: low,high")
    p.set_defaults(func=_run_data)


def _quiet_beam():
    """Beam logs every worker's start-up at WARNING; the command shows its own progress instead."""
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def _run_data(args, beam_args) -> int:
    _quiet_beam()
    from tworec import contract
    from tworec.beam.pipeline import DataConfig, run
    from tworec.beam.sources.synthetic import SyntheticConfig
    from tworec.beam.splits import SplitConfig
    from tworec.beam.summary import format_summary
    from tworec.beam.validate import RatingRange
    from tworec.progress import spinner
    from apache_beam.io.filesystems import FileSystems

    low, high = (float(x) for x in args.rating_range.split(","))
    config = DataConfig(
        dataset=args.dataset,
        input=args.input,
        history_length=args.history_length or contract.HISTORY_LENGTH,
        shards=args.shards,
        split=SplitConfig(train_fraction=args.train_fraction, valid_fraction=args.valid_fraction,
                          cold_item_fraction=args.cold_item_fraction, seed=args.seed),
        synthetic=SyntheticConfig(interactions=args.synthetic_interactions, seed=args.synthetic_seed),
        csv_ratings=RatingRange(low, high),
    )
    with spinner(f"building {args.dataset} dataset"):
        layout = run(config, args.out, beam_args)
    with FileSystems.open(layout.stats) as handle:
        stats = json.loads(handle.read())
    print(format_summary(stats, args.out))
    return 0 if stats["reconciliation"]["interactions"]["balanced"] else 1


def _add_train_retrieval(sub):
    from tworec.towers.config import SELECTIONS, RetrievalConfig

    defaults = RetrievalConfig()
    p = sub.add_parser("train-retrieval", help="train the two-tower retrieval model")
    p.add_argument("--data", required=True, help="a data folder written by `tworec data`")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--variant", default=defaults.variant, choices=("content", "id_only"))
    p.add_argument("--protocol", default=defaults.protocol, choices=("temporal", "tfrs"),
                   help="temporal: train on train, stop early on valid; tfrs: train on tfrs_train")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim)
    p.add_argument("--temperature", type=float, default=defaults.temperature)
    p.add_argument("--no-logq", action="store_true", help="turn off the sampling-bias correction")
    p.add_argument("--mixed-negatives", type=int, default=0)
    p.add_argument("--id-dropout", type=float, default=defaults.id_dropout,
                   help="share of training examples whose item id is hidden (DropoutNet)")
    p.add_argument("--user-dropout", type=float, default=defaults.user_dropout)
    p.add_argument("--content-dropout", type=float, default=defaults.content_dropout)
    p.add_argument("--content-hidden", type=int, default=defaults.content_hidden,
                   help="hidden units of the content head (0: linear)")
    p.add_argument("--encoder", default=defaults.encoder, choices=("minilm", "tiny"))
    p.add_argument("--encoder-mode", default=defaults.encoder_mode, choices=("frozen", "finetune"),
                   help="frozen: cached encoder outputs and a trainable head (the CPU default); finetune: the "
                        "encoder's top layers train too (for GPUs: each step runs them over the batch's items)")
    p.add_argument("--finetune-layers", type=int, default=defaults.finetune_layers,
                   help="with --encoder-mode finetune: how many top encoder layers train")
    p.add_argument("--selection", default=defaults.selection, choices=SELECTIONS,
                   help="what keeps the best epoch and stops training: validation HitRate@K or loss")
    p.add_argument("--new-item-offset", type=float, default=None,
                   help="added to the retrieval score of items without an id embedding (cold, new); "
                        "default: the offset with the best validation HitRate, from 0 to 0.1")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.set_defaults(func=_run_train_retrieval)


def _run_train_retrieval(args, _):
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    config = RetrievalConfig(
        variant=args.variant, protocol=args.protocol, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, embedding_dim=args.embedding_dim,
        temperature=args.temperature, logq_correction=not args.no_logq,
        mixed_negatives=args.mixed_negatives, encoder=args.encoder, encoder_mode=args.encoder_mode,
        finetune_layers=args.finetune_layers, seed=args.seed,
        id_dropout=args.id_dropout, user_dropout=args.user_dropout,
        content_dropout=args.content_dropout, content_hidden=args.content_hidden, selection=args.selection,
        new_item_offset=args.new_item_offset)
    summary = train_retrieval(args.data, args.out, config)
    print(f"trained {summary['variant']} ({summary['protocol']}) on {summary['replicas']} replica(s) "
          f"{summary['devices']}: {summary['epochs_run']} epochs, "
          f"{summary['train_examples_per_second']:,.0f} examples/s, new-item offset "
          f"{summary['new_item_offset']:g} → {args.out}")
    return 0


def _add_index(sub):
    p = sub.add_parser("index", help="build the ScaNN index over a trained model's item embeddings")
    p.add_argument("--model", required=True, help="a model folder from train-retrieval")
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--neighbors", type=int, default=200, help="default number of results")
    p.set_defaults(func=_run_index)


def _run_index(args, _):
    from tworec.towers.index import IndexConfig, ItemIndex

    index = ItemIndex.of_model(args.model, IndexConfig(num_neighbors=args.neighbors))
    index.save(args.out)
    kind = "brute force" if index.size < index.config.brute_force_below else "tree + AH"
    shift = ", new-item offset as an extra coordinate" if index.shifted else ""
    print(f"indexed {index.size:,} items ({index.dimension} dims{shift}, {kind}) → {args.out}")
    return 0


def _add_train_ranker(sub):
    from tworec.ranking.config import RankerConfig

    d = RankerConfig()
    p = sub.add_parser("train-ranker", help="train the ranking model on lists mined with a retrieval model")
    p.add_argument("--data", required=True, help="a data folder written by `tworec data`")
    p.add_argument("--retrieval", required=True, help="a temporal-protocol model folder from train-retrieval")
    p.add_argument("--out", required=True, help="ranker folder")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="lists per global batch")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--hard-negatives", type=int, default=d.hard_negatives)
    p.add_argument("--random-negatives", type=int, default=d.random_negatives)
    p.add_argument("--candidates", type=int, default=d.candidates, help="retrieval depth for hard negatives")
    p.add_argument("--splits", nargs="+", default=list(d.splits), help="splits to mine lists from")
    p.add_argument("--new-item-positive-repeats", type=int, default=d.new_item_positive_repeats,
                   help="repeat lists whose positive is a new (id-less) item this many times")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=_run_train_ranker)


def _run_train_ranker(args, _):
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.train import train_ranker

    config = RankerConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                          hard_negatives=args.hard_negatives, random_negatives=args.random_negatives,
                          candidates=args.candidates, splits=tuple(args.splits), seed=args.seed,
                          new_item_positive_repeats=args.new_item_positive_repeats)
    s = train_ranker(args.data, args.retrieval, args.out, config)
    print(f"trained ranker on {s['lists']['train']:,} lists of {s['lists']['list_size']} "
          f"({s['replicas']} replica(s) {s['devices']}): {s['epochs_run']} epochs, "
          f"{s['train_rows_per_second']:,.0f} rows/s → {args.out}")
    return 0


def _add_eval(sub):
    p = sub.add_parser("eval", help="evaluate models against popularity (metrics.json + summary.md)")
    p.add_argument("--data", required=True)
    p.add_argument("--models", nargs="*", default=[], help="model folders from train-retrieval")
    p.add_argument("--ranker", help="a ranker folder: adds the two_stage model (retrieve 200 → rank)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_eval)


def _run_eval(args, _):
    from tworec.evaluation.evaluate import evaluate, summary_markdown

    metrics = evaluate(args.data, args.models, args.out, ranker_dir=args.ranker)
    print(summary_markdown(metrics))
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="publish the next version into a deployment repository "
                                      "(Triton models + gateway bundle + manifest)")
    p.add_argument("--retrieval", required=True, help="the content model folder the ranker was trained with")
    p.add_argument("--ranker", required=True, help="a ranker folder from train-ranker")
    p.add_argument("--repo", required=True, help="deployment repository (created if missing)")
    p.add_argument("--eval", help="an eval folder: its metrics.json goes into the manifest")
    p.set_defaults(func=_run_export)


def _run_export(args, _):
    from tworec.export.repository import export_repository

    entry = export_repository(args.retrieval, args.ranker, args.repo, args.eval)
    print(f"published version {entry['version']} → {args.repo} (Triton models {entry['triton']}, "
          f"gateway {entry['gateway']})")
    return 0


def _add_export_embeddings(sub):
    p = sub.add_parser("export-embeddings", help="Beam job: embeddings of every item and every user's latest "
                                                 "state to sharded TFRecord + Parquet",
                       description="Options not listed are passed to Beam (e.g. --runner=DataflowRunner ...).")
    p.add_argument("--data", required=True, help="the data folder (items and interactions)")
    p.add_argument("--repo", required=True, help="deployment repository")
    p.add_argument("--version", type=int, help="exported version (default: the current one)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_export_embeddings)


def _run_export_embeddings(args, beam_args):
    _quiet_beam()
    from tworec.export.embeddings import export_embeddings
    from tworec.progress import spinner

    with spinner("exporting embeddings"):
        version = export_embeddings(args.data, args.repo, args.out, args.version, beam_args)
    print(f"embeddings of version {version} → {args.out}/items/, {args.out}/users/ (TFRecord + Parquet)")
    return 0


def _add_serve(sub):
    p = sub.add_parser("serve", help="start Triton and the gRPC gateway on a deployment repository")
    p.add_argument("--repo", required=True)
    p.add_argument("--host", default="127.0.0.1", help="gateway address (loopback by default)")
    p.add_argument("--port", type=int, default=0, help="gateway port (0: a free one, printed at start)")
    p.add_argument("--triton", help="host:port of a running Triton (default: start one on loopback)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--no-shared-memory", action="store_true",
                   help="send ranker rows to the Triton this command starts inside gRPC messages, "
                        "not through /dev/shm (an external --triton always gets messages)")
    p.add_argument("--tls-cert", help="PEM server certificate: serve TLS only (no plaintext port)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)")
    p.add_argument("--tokens-file", help="accepted bearer tokens, one per line (health checks stay open)")
    p.set_defaults(func=_run_serve)


def _run_serve(args, _):
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from tworec.serving.security import SecurityConfig
    from tworec.serving.server import ServeConfig, serve_forever

    security = SecurityConfig(tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
                              tokens_file=args.tokens_file)
    return serve_forever(ServeConfig(repo=args.repo, host=args.host, port=args.port,
                                     triton_address=args.triton, workers=args.workers, security=security,
                                     ranker_shared_memory=not args.no_shared_memory))


def _add_recommend(sub):
    p = sub.add_parser("recommend", help="call a running gateway and print the answer as a table")
    p.add_argument("--address", required=True, help="host:port printed by `tworec serve`")
    p.add_argument("--user", default="", help="user id (may be unknown)")
    p.add_argument("--history", nargs="*", default=[], help="recent item ids, most recent first")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")
    p.add_argument("--token", help="bearer token (or set TWOREC_TOKEN)")
    p.add_argument("--tls-ca", help="PEM CA that signed the gateway's certificate: connect with TLS")
    p.set_defaults(func=_run_recommend)


def _run_recommend(args, _):
    import grpc

    from tworec.serving.client import RecommenderClient, format_table

    import os

    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    with RecommenderClient(args.address, timeout_s=args.timeout, token=args.token or os.environ.get("TWOREC_TOKEN"),
                           root_certificates=ca) as client:
        try:
            response = client.recommend(args.user, args.history, args.k, args.exclude)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(format_table(response, f"user {args.user or '(anonymous)'} · history {args.history or '[]'}"))
    return 0


def _add_pipeline(sub):
    p = sub.add_parser("pipeline", help="run every stage (data → retrieval → index → ranker → eval → export), "
                                        "skipping stages already complete",
                       description="Options not listed are passed to the Beam data job.")
    p.add_argument("--dataset", default="synthetic", choices=("synthetic", "movielens-100k", "amazon-2018", "csv"))
    p.add_argument("--input", help="folder of the raw files (defaults for movielens-100k/amazon-2018)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--synthetic-interactions", type=int, default=20_000)
    p.add_argument("--retrieval-epochs", type=int)
    p.add_argument("--encoder-mode", default="frozen", choices=("frozen", "finetune"),
                   help="the content model's text encoder: frozen (cached outputs) or finetune (top layers "
                        "train; for GPUs)")
    p.add_argument("--ranker-epochs", type=int)
    p.set_defaults(func=_run_pipeline)


def _run_pipeline(args, beam_args):
    _quiet_beam()
    from tworec.pipeline import PipelineConfig, run_pipeline

    run_pipeline(args.out, PipelineConfig(dataset=args.dataset, input=args.input,
                                          synthetic_interactions=args.synthetic_interactions,
                                          retrieval_epochs=args.retrieval_epochs, ranker_epochs=args.ranker_epochs,
                                          encoder_mode=args.encoder_mode,
                                          beam_args=beam_args))
    return 0


def _add_report(sub):
    p = sub.add_parser("report", help="write RUN/report/index.html: metrics table, HitRate@K curves, popularity "
                                      "bias, example users, ScaNN and serving latency figures")
    p.add_argument("--run", required=True, help="a run folder from `tworec pipeline` (needs data/, eval/)")
    p.add_argument("--out", help="output folder (default RUN/report)")
    p.add_argument("--bench", help="benchmark results (default RUN/bench/results.json or ./bench/results.json)")
    p.add_argument("--examples", type=int, default=4, help="example users shown")
    p.set_defaults(func=_run_report)


def _run_report(args, _):
    from tworec.report.build import ReportConfig, build_report

    page = build_report(ReportConfig(run=args.run, out=args.out, bench=args.bench, examples=args.examples))
    print(f"report: {page}")
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="start the services on a repository, make real gRPC calls, shut down")
    p.add_argument("--repo", required=True)
    p.set_defaults(func=lambda args, _: __import__("tworec.serving.demo", fromlist=["run_demo"]).run_demo(args.repo))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tworec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_train_retrieval(sub)
    _add_index(sub)
    _add_train_ranker(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_export_embeddings(sub)
    _add_serve(sub)
    _add_recommend(sub)
    _add_pipeline(sub)
    _add_report(sub)
    _add_demo(sub)
    return parser


# Subcommands whose unknown options are forwarded to a Beam pipeline.
_BEAM_COMMANDS = {"data", "pipeline", "export-embeddings"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in _BEAM_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args, extra)


if __name__ == "__main__":
    sys.exit(main())
