"""What each stage costs as the catalog and the event log grow, on the synthetic data.

    python benchmarks/bench_scale.py --items N --events M --out FILE.json [--run DIR]
    python benchmarks/bench_scale.py --items N --index-only --out FILE.json

End to end: every ``tworec pipeline`` stage runs as its own process (``--until STAGE``) on the
synthetic data with N items and M interactions; per stage, wall time, the peak resident memory
summed over the process and all its children (polled from /proc) and the bytes it wrote. Also:
MiniLM encoder items/s (on ``--encode-sample`` item texts; the pipeline itself trains with
``--encoder``, by default the tiny one, since MiniLM encodes ~340 texts/s on 2 cores), training
examples/s, the index's build-time recall@10, single-query p50/p99 and bytes per item, and the
gateway's Recommend p50/p99 and QPS at concurrency 1 and 16 on the exported repository.

``--index-only``: the product's ScaNN index (towers/index.py, tuned for its recall target on
held-out queries) over N clustered unit vectors, float32 and int8 re-ordering: build seconds,
recall@10 on fresh queries against exact search, single-query p50/p99, bytes per item.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import exit_on_sigterm  # noqa: E402
from tworec.cli.pipeline import STAGES  # noqa: E402  (the pipeline's order: each stage's --until runs only it)


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and every descendant, from /proc."""
    children, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measured(command: list, log_path: str) -> dict:
    """Runs ``command``; {"seconds", "peak_rss_mb", "returncode"}."""
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        peak, done = 0, threading.Event()

        def poll():
            nonlocal peak
            while not done.wait(0.25):
                peak = max(peak, _tree_rss_kb(process.pid))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        code = process.wait()
        done.set()
        thread.join()
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak / 1024, 1),
            "returncode": code}


def disk_mb(path) -> float:
    path = Path(path)
    if not path.exists():
        return 0.0
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def latency(search, queries) -> dict:
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - started)
    times = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def recall_at_10(index, items: np.ndarray, queries: np.ndarray, shift=None) -> float:
    from tworec.towers.index import kth_exact_score

    scores_shift = np.zeros(len(items), np.float32) if shift is None else shift
    kth = kth_exact_score(np.concatenate([items, scores_shift[:, None]], 1),
                          np.concatenate([queries, np.ones((len(queries), 1), np.float32)], 1), 10)
    found, _ = index.search_batched(queries, 10)
    row = {str(i): r for r, i in enumerate(index.searcher.docids)}
    hits = [np.sum(items[[row[i] for i in f]] @ q + scores_shift[[row[i] for i in f]] >= t - 1e-5)
            for f, q, t in zip(found, queries, kth)]
    return float(np.mean(hits) / 10)


def index_only(args) -> dict:
    from tworec.synthetic_embeddings import clustered_unit_vectors
    from tworec.towers.index import IndexConfig, ItemIndex

    items = clustered_unit_vectors(args.items, args.dim, seed=0)
    held_out = clustered_unit_vectors(1000, args.dim, seed=1)
    fresh = clustered_unit_vectors(args.queries, args.dim, seed=2)
    out = {"items": args.items, "dim": args.dim, "variants": {}}
    for dtype in ("float32", "int8"):
        config = IndexConfig(num_neighbors=10, reorder_dtype=dtype)
        started = time.perf_counter()
        index = ItemIndex.build(items, range(args.items), config, queries=held_out)
        build = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            index.save(folder)
            size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        variant = {"build_seconds": round(build, 1), "tuning": index.tuning,
                   "recall@10": round(recall_at_10(index, items, fresh), 4),
                   **latency(lambda q: index.search(q, 10), fresh), "bytes_per_item": round(size / args.items, 1)}
        out["variants"][dtype] = variant
        print(dtype, json.dumps(variant), flush=True)
        del index
    out["index"] = {k: out["variants"]["float32"][k] for k in ("recall@10", "p50_ms", "p99_ms", "bytes_per_item")}
    return out


def end_to_end(args) -> dict:
    run = Path(args.run or tempfile.mkdtemp(prefix=f"scale-{args.items}-"))
    tworec = str(Path(sys.executable).with_name("tworec"))
    common = ["pipeline", "--dataset", "synthetic", "--out", str(run), "--synthetic-items", str(args.items),
              "--synthetic-interactions", str(args.events), "--retrieval-epochs", str(args.epochs),
              "--retrieval-encoder", args.encoder, *args.extra]
    out = {"items": args.items, "events": args.events, "run": str(run), "encoder": args.encoder, "stages": {}}
    folders = {"data": "data", "retrieval": "retrieval", "retrieval_id_only": "retrieval_id_only", "index": "index",
               "search": "search", "ranker": "ranker", "eval": "eval", "export": "repo"}
    for stage in STAGES:
        if stage not in args.stages:
            continue
        result = measured([tworec, *common, "--until", stage], str(run) + f".{stage}.log")
        result["disk_mb"] = disk_mb(run / folders[stage])
        out["stages"][stage] = result
        print(stage, json.dumps(result), flush=True)
        if result["returncode"]:
            print(f"{stage} failed: see {run}.{stage}.log", flush=True)
            break
    stats = run / "data" / "stats.json"
    if "data" in out["stages"] and stats.exists():
        out["data_events_per_s"] = round(args.events / out["stages"]["data"]["seconds"], 1)
    if args.encode_sample:
        out["encoder_items_per_s"] = encoder_speed(run, args.encode_sample)
    summary = run / "retrieval" / "model.json"
    if summary.exists():
        described = json.loads(summary.read_text())
        out["train_examples_per_s"] = described["summary"].get("train_examples_per_second")
        out["train_bytes_per_item"] = training_bytes_per_item(described["config"])
    index_dir = run / "index"
    if (index_dir / "index.json").exists():
        out["index"] = index_measures(run)
    if (run / "repo" / "manifest.json").exists() and "gateway" in args.stages:
        out["gateway"] = gateway_measures(run / "repo", args.gateway_seconds)
    return out


def encoder_speed(run: Path, sample: int) -> float:
    """MiniLM items/s on ``sample`` of the run's item texts (a fresh cache: nothing is reused)."""
    from tworec.towers.catalog import load_catalog
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.encoder_cache import build_encoder, encode_batch_size, encode_texts

    texts = list(load_catalog(str(run / "data")).texts[:sample])
    config = RetrievalConfig(encoder="minilm")
    encoder = build_encoder(config)
    encode_texts(encoder, texts[:256], config.max_text_length, encode_batch_size())  # warm-up
    started = time.perf_counter()
    encode_texts(encoder, texts, config.max_text_length, encode_batch_size())
    return round(len(texts) / (time.perf_counter() - started), 1)


def training_bytes_per_item(config: dict) -> int:
    """Bytes per catalog item held by each training replica: the cached content vector (at the item
    tower's CONTENT_DTYPE), the id embedding and Adam's two slots, the id row and the category ids."""
    from tworec.contract import MAX_ITEM_CATEGORIES
    from tworec.towers.model import CONTENT_DTYPE
    from tworec.towers.text_encoder import EncoderConfig

    hidden = (EncoderConfig() if config["encoder"] == "minilm" else EncoderConfig.tiny()).hidden_size
    content = hidden * CONTENT_DTYPE.size if config["variant"] == "content" else 0
    return content + 3 * config["id_dim"] * 4 + 4 + 4 * MAX_ITEM_CATEGORIES


def index_measures(run: Path) -> dict:
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.index import ItemIndex, tuning_rows

    index = ItemIndex.load(str(run / "index"))
    model = RetrievalArtifact.load(run / "retrieval")
    queries = model.held_out_queries
    unseen = np.setdiff1d(np.arange(len(queries)), tuning_rows(len(queries), index.config))  # not tuned on
    queries = queries[np.random.default_rng(3).permutation(unseen)[:500]]
    searched = latency(lambda q: index.search(q, 200), queries)
    return {"items": index.size, "tuning": index.tuning,
            "recall@10": round(recall_at_10(index, model.item_embeddings, queries, model.score_shift), 4),
            "p50_ms": searched["p50_ms"], "p99_ms": searched["p99_ms"],
            "bytes_per_item": round(disk_mb(run / "index") * 2**20 / index.size, 1)}


def gateway_measures(repo: Path, seconds: float) -> dict:
    from bench_gateway import _requests, run_load
    from tworec.serving.server import ServeConfig, Service

    out = {}
    with Service(ServeConfig(repo=str(repo))) as service:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(_requests(service.bundle), handle)
        run_load(service.address, handle.name, 4, 3.0)  # warm-up
        for concurrency in (1, 16):
            r = run_load(service.address, handle.name, concurrency, seconds)
            lat = np.asarray(r["latencies_ms"])
            out[f"c{concurrency}_p50_ms"] = round(float(np.percentile(lat, 50)), 3)
            out[f"c{concurrency}_p99_ms"] = round(float(np.percentile(lat, 99)), 3)
            out[f"c{concurrency}_qps"] = round(len(lat) / r["seconds"], 1)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--events", type=int, default=0, help="interactions (end to end)")
    parser.add_argument("--out", required=True, help="JSON file written with the results")
    parser.add_argument("--run", help="run folder (default: a new temporary one)")
    parser.add_argument("--index-only", action="store_true")
    parser.add_argument("--dim", type=int, default=64, help="--index-only: vector dimensions")
    parser.add_argument("--queries", type=int, default=1000, help="--index-only: fresh queries measured")
    parser.add_argument("--stages", nargs="+", default=[*STAGES, "gateway"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--encoder", default="tiny", help="the pipeline's text encoder (minilm: ~340 items/s here)")
    parser.add_argument("--encode-sample", type=int, default=0, help="MiniLM items/s measured on this many texts")
    parser.add_argument("--gateway-seconds", type=float, default=10.0)
    parser.add_argument("extra", nargs="*", help="more `tworec pipeline` flags, after --")
    args = parser.parse_args(argv)
    result = index_only(args) if args.index_only else end_to_end(args)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "variants"}, indent=1))
    return result


if __name__ == "__main__":
    exit_on_sigterm()
    main()
