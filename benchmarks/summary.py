"""One Markdown table from the shared benchmark results (``make bench`` runs it last).

    python benchmarks/summary.py bench/results.json [--out bench/results.md]

With ``--out``, the table replaces the "Latest make bench" section of that file; everything below
the KEEP marker (the recorded experiments) stays as it is.
"""
from __future__ import annotations

import argparse
import json
import os

HEADER = """# Measurements

The latest `make bench` table comes first (benchmarks/summary.py writes it); below the marker,
recorded experiments, each with the command and data it was measured on (their history is in
the commit log). Machine: the 2-core, 24 GiB development machine unless a line says otherwise;
its speed drifts 2-3x over an hour, so latencies are compared within one interleaved run.
"""
KEEP = "<!-- recorded experiments: benchmarks/summary.py keeps everything below this line -->"


def _rows(name: str, r: dict) -> list:
    """(benchmark, measure, median, ratio / note) rows for one benchmark's result."""
    if name == "data_pipeline":
        return [(name, f"{r['interactions']:,} synthetic interactions/s", f"{r['interactions_per_second_median']:,}",
                 f"{r['ratio_to_anchor']}x the ~{r['anchor_per_second']:,}/s DirectRunner anchor")]
    if name == "scann":
        rows = [(name, f"QPS, {r['items']:,} items × {r['dim']}", f"{r['scann_qps_median']:,.0f}",
                 f"recall@10 {r['recall_at_10']}; {r['speedup_vs_numpy_brute_force']}x numpy brute force, "
                 f"{r['speedup_vs_scann_brute_force']}x ScaNN brute force")]
        for p in r.get("curve", {}).get("points", []):
            rows.append((name, f"curve: {p['leaves_to_search']} leaves", f"{p['qps']:,.0f} QPS",
                         f"recall@10 {p['recall']:.3f}, {p['speedup_vs_brute_force']:.1f}x brute force"))
        return rows
    if name == "training":
        return [(name, "retrieval examples/s, content", f"{r['content_examples_per_second_median']:,.0f}",
                 f"{r['content_over_id_only']:.2f}x the id-only baseline "
                 f"({r['id_only_examples_per_second_median']:,.0f}/s), {r['replicas']} replica(s)")]
    if name == "ranker":
        return [(name, f"{n} candidates, p50 / p99 ms", f"{v['triton']['p50_ms']:.2f} / {v['triton']['p99_ms']:.2f}",
                 f"Triton; in process {v['in_process']['p50_ms']:.2f} / {v['in_process']['p99_ms']:.2f} "
                 f"(×{v['triton_over_in_process_p50']:.2f})") for n, v in r["candidates"].items()]
    if name == "gateway":
        return [(name, f"Recommend, {c} clients: p50 / p99 ms", f"{v['p50_ms']:.2f} / {v['p99_ms']:.2f}",
                 f"{v['qps']:.0f} QPS, {v['errors']} errors, {v['degraded']} degraded")
                for c, v in sorted(r["levels"].items(), key=lambda kv: int(kv[0]))]
    if name == "history_probe":
        return [(name, f"history of {n} items of one category: where the category ranks",
                 f"{v['mean_median_rank_percentile']:.1f}th percentile", "random ordering: 50th; lower is better")
                for n, v in r["lengths"].items()]
    if name == "cold_probe":
        rows = []
        for label, v in (("model", r["model"]), ("every item content only", r["content_only"])):
            rows.append((name, f"{label}: cold / warm HR@100", f"{v['cold']['hitrate@100']:.3f} / {v['warm']['hitrate@100']:.3f}",
                         f"all HR@100 {v['all']['hitrate@100']:.3f}, HR@10 {v['all']['hitrate@10']:.3f}"))
        shifted = [(f"new-item offset {o}", v) for o, v in r["offsets"].items()]
        for label, v in shifted:
            rows.append((name, f"{label}: cold / warm HR@100",
                         f"{v['cold']['hitrate@100']:.3f} / {v['warm']['hitrate@100']:.3f}",
                         f"all HR@100 {v['all']['hitrate@100']:.3f}, HR@10 {v['all']['hitrate@10']:.3f}, "
                         f"tail HR@100 {v['tail']['hitrate@100']:.3f}"))
        return rows
    if name == "live":
        rows = [(name, f"RecordEvents, batches of 100, concurrency {r_['concurrency']}", f"{r_['events_per_s']:,} events/s",
                 f"p50 {r_['p50_ms']} ms, p99 {r_['p99_ms']} ms a call (durable)") for r_ in r["ingestion"]]
        for key, label in (("freshness_same_replica", "same replica"), ("freshness_across_replicas", "across replicas")):
            if key in r:
                rows.append((name, f"freshness, {label}: click acknowledged → a Recommend reflecting it",
                             f"p99 {r[key]['p99_ms']} ms", f"p50 {r[key]['p50_ms']} ms"))
        ab = r["recommend_latency_ab"]
        rows.append((name, "Recommend p50, live state + trending vs none", f"{ab['live_no_slot']} vs {ab['off']} ms",
                     f"×{ab['ratio_live_no_slot_over_off']} (medians of {ab['rounds']} alternating rounds)"))
        rows.append((name, "Recommend p50, exploration slot on vs off", f"{ab['live']} vs {ab['live_no_slot']} ms",
                     f"×{ab['ratio_slot_on_over_off']} ({ab['slot_answers']} answers had a slot)"))
        return rows
    if name == "sim_exploration":
        rows = []
        for arm, v in r["arms"].items():
            median = v["median_impressions_to_first_click"]
            reached = "" if v["reached_impressions_to_first_click"] else " (not reached in every seed)"
            rows.append((name, f"{arm}: clicks / new-item clicks / discoverable new items",
                         f"{v['clicks']:.0f} / {v['new_item_clicks']:.0f} / {v['discoverable_new_items']:.1f}",
                         f"median impressions to first click {median:.0f}{reached}, {r['seeds']} seeds"))
        o = r["ope"]
        rows.append((name, "off-policy IPS / SNIPS / DR vs true (Thompson from random logs)",
                     f"{o['ips']:.4f} / {o['snips']:.4f} / {o['dr']:.4f} vs {o['true']:.4f}",
                     f"ESS {o['ess']:.0f} of {o['n']}, max weight {o['max_weight']:.0f}"))
        return rows
    if name == "soak":
        return [(name, "soak", json.dumps({k: v for k, v in r.items() if isinstance(v, (int, float))})[:80], "")]
    return [(name, "result", json.dumps(r)[:80], "")]


def markdown(results: dict) -> str:
    machines = sorted({r.get("machine", "?") for r in results.values()})
    lines = [f"Machine: {'; '.join(machines)}", "", "| benchmark | measure | median | ratio / note |", "|---|---|---|---|"]
    for name, r in results.items():
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(name, r)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    with open(args.results) as handle:
        text = markdown(json.load(handle))
    if args.out:
        kept = ""
        if os.path.exists(args.out):
            with open(args.out) as handle:
                previous = handle.read()
            if KEEP in previous:
                kept = previous[previous.index(KEEP):]
        with open(args.out, "w") as handle:
            handle.write(f"{HEADER}\n## Latest `make bench`\n\n{text}\n{kept}")
    print(text)
    return text


if __name__ == "__main__":
    main()
