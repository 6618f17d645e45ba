"""``tworec report --run DIR``: one HTML page per run that says how it compares and where it fails.

Reads the run's evaluation (``EvalResults``), its catalog, its item embeddings and, when
present, the last ``make bench`` results; writes ``report/index.html``, the evaluation's metrics
(same file and shape as the eval folder's), ``report/figures.json`` (the numbers behind every
figure) and the PNG figures.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from html import escape
from pathlib import Path

import numpy as np

from tworec.evaluation.artifact import EvalResults
from tworec.layout import RunLayout
from tworec.report.config import ReportConfig
from tworec.report import figures, html

# The report folder's files (written only here).
REPORT_PAGE = "index.html"
REPORT_FIGURES = "figures.json"  # the numbers behind every figure
CURVE_DEPTH = 200
SEGMENT_ORDER = ("all", "warm", "cold", "tail")


def hitrate_curve(ranks: np.ndarray, depth: int = CURVE_DEPTH) -> list:
    """[HR@1, …, HR@depth] from each query's target rank."""
    if not len(ranks):
        return [0.0] * depth
    hits = np.bincount(np.minimum(ranks, depth + 1), minlength=depth + 2)[1: depth + 1]
    return (np.cumsum(hits) / len(ranks)).tolist()


def coverage_at_10(top: np.ndarray, catalog_size: int) -> float:
    return len(np.unique(top[:, :10])) / catalog_size


def pick_examples(details, catalog, n: int, seed: int) -> list:
    """Half warm and half cold targets (when the run has cold items), distinct users, with history."""
    rng = np.random.default_rng(seed)
    has_history = (details.recent_history >= 0).any(axis=1)
    chosen, users = [], set()
    groups = [("cold", details.segments.get("cold")), ("warm", details.segments.get("warm"))]
    groups = [(name, mask) for name, mask in groups if mask is not None and (mask & has_history).any()]
    for g in range(n):
        if not groups:
            break
        name, mask = groups[g % len(groups)]
        candidates = [int(i) for i in rng.permutation(np.nonzero(mask & has_history)[0])
                      if details.user_ids[i] not in users]
        if candidates:
            chosen.append((candidates[0], f"{name} target"))
            users.add(details.user_ids[candidates[0]])
    name = display_names(catalog)
    out = []
    for query, why in chosen:
        target = int(details.targets[query])
        out.append({
            "user": str(details.user_ids[query]), "why": why,
            "target": (name[target], bool(catalog.cold[target])),
            "history": [name[r] for r in details.recent_history[query] if r >= 0],
            "tops": {model: [(name[r], bool(catalog.cold[r]), int(r) == target) for r in o.top[query]]
                     for model, o in details.outcomes.items()},
        })
    return out


def display_names(catalog) -> list:
    """Item titles, with the id added where several items share a title (e.g. a publisher's name
    standing in for missing titles), so the example lists stay readable."""
    counts = Counter(catalog.titles)
    return [t if counts[t] == 1 else f"{t} · {i}" for t, i in zip(catalog.titles, catalog.item_ids)]


def _scann_curve(config: ReportConfig, bench: dict | None):
    """The benchmark's curve (large synthetic catalog) when there is one, else one measured now on
    this run's own item embeddings (items as queries: the SimilarItems workload)."""
    from tworec.towers.index_curve import recall_speed_curve

    curves = []
    if bench and bench.get("scann", {}).get("curve"):
        curves.append(("make bench, synthetic catalog", bench["scann"]["curve"]))
    from tworec.towers.artifact import RetrievalArtifact

    retrieval = RunLayout(config.run).retrieval
    if RetrievalArtifact.exists(retrieval):
        items = RetrievalArtifact.load(retrieval).item_embeddings
        rng = np.random.default_rng(config.seed)
        queries = items[rng.choice(len(items), min(config.scann_queries, len(items)), replace=False)]
        curves.append(("this run's item embeddings", recall_speed_curve(items, queries, k=10)))
    return curves


def build_report(config: ReportConfig) -> Path:
    from tworec.metrics import head_items
    from tworec.towers.catalog import load_catalog

    run = RunLayout(config.run)
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    results = EvalResults.load(run.eval)
    metrics, details = results.metrics, results.details()
    catalog = load_catalog(run.data.root)
    bench = config.bench_results()
    stats_path = Path(run.data.stats)
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    dataset = stats.get("dataset", "?")

    segments = [s for s in SEGMENT_ORDER if s in details.segments]
    numbers: dict = {"dataset": dataset, "catalog_items": catalog.size, "test_queries": len(details.targets)}
    numbers["hitrate_curves"] = {
        s: {m: hitrate_curve(o.ranks[details.segments[s]]) for m, o in details.outcomes.items()} for s in segments}
    figures.hitrate_curves(numbers["hitrate_curves"], out / "hitrate_curves.png")

    numbers["coverage@10"] = {m: coverage_at_10(o.top, catalog.size) for m, o in details.outcomes.items()}
    head = head_items(catalog.train_counts)
    numbers["recommended_popularity"] = {
        m: {"median_train_count": float(np.median(catalog.train_counts[o.top[:, :10]])),
            "share_head": float(head[o.top[:, :10]].mean()), "share_cold": float(catalog.cold[o.top[:, :10]].mean())}
        for m, o in details.outcomes.items()}
    numbers["catalog_popularity"] = {"median_train_count": float(np.median(catalog.train_counts)),
                                     "share_head": float(head.mean()), "share_cold": float(catalog.cold.mean())}
    numbers["popularity_buckets"] = figures.popularity_bias(
        catalog.train_counts, {m: o.top[:, :10] for m, o in details.outcomes.items()}, numbers["coverage@10"],
        out / "popularity_bias.png")

    sections = [("Accuracy", _accuracy_html(metrics, segments))]
    sections.append(("HitRate@K curves", html.figure(
        "hitrate_curves.png", f"HitRate@K for K = 1…{CURVE_DEPTH}, temporal protocol, per segment (log K axis)")))
    sections.append(("Popularity bias", _popularity_html(numbers) + html.figure(
        "popularity_bias.png", "Share of all top-10 slots by the recommended item's train popularity, "
                               "against the catalog's share of items; catalog coverage@10 = share of items in "
                               "anyone's top 10")))
    sections.append(("Example users", html.example_users(pick_examples(details, catalog, config.examples, config.seed))))

    curves = _scann_curve(config, bench)
    numbers["scann"] = {source: curve for source, curve in curves}
    scann_html = []
    for i, (source, curve) in enumerate(curves):
        name = f"scann_curve_{i}.png"
        figures.scann_curve(curve, out / name, source)
        scann_html.append(html.figure(name, f"ScaNN recall@10 vs single-query throughput, {source}; "
                                            f"brute force: {curve['brute_force_qps']:,.0f} QPS"))
    sections.append(("Retrieval index: ScaNN vs brute force", "".join(scann_html) or "<p>no item embeddings in this run</p>"))
    sections.append(("Serving latency", _latency_html(bench, out, numbers)))
    if bench and bench.get("sim_exploration"):
        sections.append(("Exploration for new items (simulator)", _exploration_html(bench["sim_exploration"], out,
                                                                                    numbers)))

    (out / EvalResults.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / REPORT_FIGURES).write_text(json.dumps(numbers, indent=2))
    meta = (f"dataset <strong>{escape(dataset)}</strong> · {catalog.size:,} items "
            f"({int(catalog.cold.sum()):,} cold) · {len(details.targets):,} test queries · run "
            f"<code>{escape(os.path.abspath(config.run))}</code> · written "
            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    (out / REPORT_PAGE).write_text(html.page(f"tworec evaluation report: {dataset}", meta, sections), encoding="utf-8")
    return out / REPORT_PAGE


def _accuracy_html(metrics: dict, segments) -> str:
    parts = ["<p>Temporal protocol: each test interaction is a query with the user's state at that moment; the whole "
             "catalog is ranked with the user's earlier items removed. <em>cold</em> = items held out of training "
             "(content only); <em>tail</em> = warm items outside the 20% most popular. Best per column highlighted.</p>",
             html.metrics_table(metrics["temporal"], segments)]
    if "tfrs" in metrics:
        parts += ["<p>TFRS tutorial protocol (random 80/20, top-K accuracy, nothing removed):</p>",
                  html.metrics_table(metrics["tfrs"], ["all"])]
    return "".join(parts)


def _popularity_html(numbers: dict) -> str:
    rows = [(html.model_label(m), f"{numbers['coverage@10'][m]:.1%}", f"{p['median_train_count']:.0f}",
             f"{p['share_head']:.1%}", f"{p['share_cold']:.1%}")
            for m, p in numbers["recommended_popularity"].items()]
    cat = numbers["catalog_popularity"]
    rows.append(("catalog (per item)", "–", f"{cat['median_train_count']:.0f}", f"{cat['share_head']:.1%}",
                 f"{cat['share_cold']:.1%}"))
    return html.grid_table(("model", "coverage@10", "median train count of top-10 items",
                            "top-10 slots from the head (20% most popular)", "top-10 slots that are cold items"), rows)


def _exploration_html(sim: dict, out: Path, numbers: dict) -> str:
    numbers["exploration"] = {"arms": {a: {k: v for k, v in s.items() if k != "per_seed"} for a, s in sim["arms"].items()},
                              "ope": {k: v for k, v in sim["ope"].items() if k != "per_seed"}}
    figures.exploration(sim["curves"], sim["arms"], out / "exploration.png")
    rows = []
    for arm, s in sim["arms"].items():
        low, high = s["ci95"]["clicks"]
        rows.append((arm.replace("_", " "), f"{s['clicks']:,.0f} [{low:,.0f}, {high:,.0f}]",
                     f"{s['new_item_clicks']:,.0f}", f"{s['discoverable_new_items']:.1f}",
                     f"{s['median_impressions_to_first_click']:,.0f}"
                     + ("" if s["reached_impressions_to_first_click"] else " (not reached in every seed)"),
                     f"{s['median_requests_to_first_click']:,.0f}" + ("" if s["reached_requests_to_first_click"]
                                                                      else " (not reached: horizon)")))
    ope = sim["ope"]
    interval = ope.get("ci95", {}).get("ips")
    interval = f" (95% interval of IPS [{interval[0]:.4f}, {interval[1]:.4f}])" if interval else ""
    return (f'<p class="meta">benchmarks/sim_exploration.py: {sim["requests"]:,} requests, {sim["new_items"]} new items, '
            f'{sim["seeds"]} seeds, a hidden matrix-factorisation ground truth.</p>'
            + html.grid_table(("arm", "clicks [95%]", "new-item clicks", "new items with ≥ 3 clicks",
                               "median impressions to first click", "median requests to first click"), rows)
            + html.figure("exploration.png", "Kaplan-Meier share of new items without a click (seed 0), and the "
                                             "clicks trade-off")
            + _exploration_goals(sim.get("goals", {}))
            + f"<p>Off-policy estimate of the Thompson slot's new-item click rate from the random arm's logs: IPS "
              f"{ope['ips']:.4f}, SNIPS {ope['snips']:.4f}, DR {ope['dr']:.4f} against {ope['true']:.4f}{interval} "
              f"(effective sample size {ope['ess']:,.0f}, largest weight {ope['max_weight']:.0f}).</p>")


def _exploration_goals(goals: dict) -> str:
    if "clicks_ratio" not in goals:
        return ""
    return (f"<p>Thompson slot against no slot: clicks {goals['clicks_ratio']:.1%} (paired by seed, 95% lower end "
            f"{goals['clicks_ratio_lower']:.1%}), new items with ≥ 3 clicks {goals['discoverable_ratio']:.1f}x, "
            f"median impressions to first click {goals['median_ratio']:.2f}x.</p>")


def _latency_html(bench: dict | None, out: Path, numbers: dict) -> str:
    if not bench or not (bench.get("gateway") or bench.get("ranker")):
        return '<p class="note">No benchmark results found: run <code>make bench</code> and rebuild the report.</p>'
    parts = []
    gateway = bench.get("gateway")
    sources = {r.get("repo") or r.get("ranker") for r in (gateway, bench.get("ranker")) if r}
    parts.append(f'<p class="meta">From the last <code>make bench</code>, measured on '
                 f'{", ".join(escape(str(s)) for s in sorted(sources))} '
                 f'({escape((gateway or bench["ranker"]).get("machine", ""))}, '
                 f'{escape((gateway or bench["ranker"]).get("recorded", ""))}).</p>')
    if gateway and gateway.get("levels"):
        numbers["gateway"] = gateway["levels"]
        figures.latency(gateway["levels"], out / "latency.png")
        rows = [(c, f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['qps']:.0f}", v.get("errors", 0))
                for c, v in sorted(gateway["levels"].items(), key=lambda kv: int(kv[0]))]
        parts.append(html.grid_table(("concurrent clients", "p50 ms", "p99 ms", "QPS", "errors"), rows))
        parts.append(html.figure("latency.png", f"Recommend over gRPC, {gateway.get('machine', '')}"))
    ranker = bench.get("ranker")
    if ranker and ranker.get("candidates"):
        numbers["ranker"] = ranker["candidates"]
        rows = [(n, f"{v['in_process']['p50_ms']:.2f}", f"{v['in_process']['p99_ms']:.2f}",
                 f"{v['triton']['p50_ms']:.2f}", f"{v['triton']['p99_ms']:.2f}")
                for n, v in ranker["candidates"].items()]
        parts.append("<p>Ranker per request:</p>" + html.grid_table(
            ("candidates", "in process p50 ms", "p99 ms", "Triton p50 ms", "p99 ms"), rows))
    return "".join(parts)

