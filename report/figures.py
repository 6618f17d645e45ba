"""The report's figures, drawn with matplotlib (Agg: no screen needed) and saved as PNG."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODEL_STYLE = {  # one colour per model across every figure
    "popularity": ("#7f7f7f", "popularity"),
    "id_only": ("#1f77b4", "id-only two-tower"),
    "two_tower": ("#2ca02c", "content two-tower"),
    "two_stage": ("#d62728", "two-stage (+ ranker)"),
    "two_stage_trending": ("#9467bd", "two-stage + trending"),
}
DPI = 110


def _style(model: str):
    color, label = MODEL_STYLE.get(model, (None, model))
    return {"color": color, "label": label}


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def hitrate_curves(curves: dict, path) -> None:
    """``curves``: {segment: {model: [HR@1 … HR@K]}} → one panel per segment."""
    segments = list(curves)
    rows = (len(segments) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(segments):]:
        ax.set_visible(False)
    for ax, segment in zip(axes.flat, segments):
        for model, values in curves[segment].items():
            ax.plot(np.arange(1, len(values) + 1), values, linewidth=1.8, **_style(model))
        ax.set_title(f"{segment}")
        ax.set_xlabel("K")
        ax.set_xscale("log")
        ax.set_ylabel("HitRate@K")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8, loc="upper left")
    _save(fig, path)


def popularity_buckets(train_counts: np.ndarray) -> tuple[list, np.ndarray]:
    """(labels, bucket per item): never seen (0), then five equal-size groups of the seen items
    from least to most popular."""
    bucket = np.zeros(len(train_counts), np.int64)
    seen = np.nonzero(train_counts > 0)[0]
    order = seen[np.argsort(train_counts[seen], kind="stable")]
    labels = ["never seen\n(cold)"]
    for q, part in enumerate(np.array_split(order, 5)):
        bucket[part] = q + 1
        low, high = (int(train_counts[part].min()), int(train_counts[part].max())) if len(part) else (0, 0)
        labels.append(f"Q{q + 1}\n{low}–{high}")
    return labels, bucket


def popularity_bias(train_counts: np.ndarray, recommended_rows: dict, coverage: dict, path) -> dict:
    """Share of top-10 slots per item-popularity bucket for each model, against the catalog's share
    of items; returns the shares drawn."""
    labels, bucket = popularity_buckets(train_counts)
    shares = {"catalog": np.bincount(bucket, minlength=len(labels)) / len(bucket)}
    for model, rows in recommended_rows.items():
        shares[model] = np.bincount(bucket[rows.ravel()], minlength=len(labels)) / max(1, rows.size)
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(12, 3.9), gridspec_kw={"width_ratios": [2.4, 1]})
    x = np.arange(len(labels))
    width = 0.8 / len(shares)
    for i, (name, share) in enumerate(shares.items()):
        style = {"color": "#cccccc", "label": "catalog (share of items)"} if name == "catalog" else _style(name)
        ax.bar(x - 0.4 + width * (i + 0.5), share, width, **style)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("items by train interactions (Q1 = least popular fifth of seen items … Q5 = most popular)")
    ax.set_ylabel("share of top-10 slots")
    ax.set_title("where recommendations come from, by item popularity")
    ax.legend(fontsize=8)
    models = list(coverage)
    bar.barh([_style(m)["label"] for m in models], [coverage[m] for m in models],
             color=[_style(m)["color"] for m in models])
    for y, m in enumerate(models):
        bar.text(coverage[m], y, f" {coverage[m]:.1%}", va="center", fontsize=8)
    bar.set_xlim(0, 1.2 * max(max(coverage.values(), default=0.0), 0.05))
    bar.set_title("catalog coverage@10")
    bar.invert_yaxis()
    _save(fig, path)
    return {"buckets": [label.replace("\n", " ") for label in labels],
            "shares": {name: share.tolist() for name, share in shares.items()}}


def scann_curve(curve: dict, path, source: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    points = curve["points"]
    ax.plot([p["recall"] for p in points], [p["qps"] for p in points], "o-", color="#2ca02c",
            label="ScaNN (tree + AH + reorder)")
    for p in points:
        ax.annotate(f"{p['leaves_to_search']} leaves", (p["recall"], p["qps"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.axhline(curve["brute_force_qps"], color="#7f7f7f", linestyle="--", label="brute force (exact)")
    ax.set_xlabel(f"recall@{curve['k']} vs exact search")
    ax.set_ylabel("queries / second (one at a time)")
    ax.set_yscale("log")
    ax.set_title(f"ScaNN: {curve['items']:,} items × {curve['dim']} dims ({source})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def latency(levels: dict, path) -> None:
    """``levels``: {concurrency: {"p50_ms", "p99_ms", "qps"}} from the gateway benchmark."""
    names = sorted(levels, key=int)
    x = np.arange(len(names))
    fig, (ax, qps) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.bar(x - 0.2, [levels[c]["p50_ms"] for c in names], 0.4, label="p50", color="#1f77b4")
    ax.bar(x + 0.2, [levels[c]["p99_ms"] for c in names], 0.4, label="p99", color="#ff7f0e")
    ax.set_xticks(x, [f"{c} clients" for c in names])
    ax.set_ylabel("ms per Recommend")
    ax.set_title("gateway latency (retrieve → rank, k = 10)")
    ax.legend(fontsize=8)
    qps.bar(x, [levels[c]["qps"] for c in names], 0.5, color="#2ca02c")
    qps.set_xticks(x, [f"{c} clients" for c in names])
    qps.set_ylabel("requests / second")
    qps.set_title("gateway throughput")
    _save(fig, path)


ARM_STYLE = {"no_slot": ("#7f7f7f", "no slot"), "random_slot": ("#1f77b4", "random slot"),
             "thompson_slot": ("#d62728", "Thompson slot")}


def exploration(curves: dict, arms: dict, path) -> None:
    """The exploration simulator: the share of new items still without a click by requests since
    their launch (Kaplan-Meier, per arm), and each arm's clicks against its new-item clicks."""
    fig, (km, trade) = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, curve in curves.items():
        color, label = ARM_STYLE.get(arm, (None, arm))
        t, s = zip(*curve)
        km.step(t, s, where="post", color=color, label=label)
    km.axhline(0.5, color="#999", lw=0.8, ls=":")
    km.set_xlabel("requests since the item's launch")
    km.set_ylabel("new items without a click")
    km.set_title("time to a new item's first click")
    km.legend(fontsize=8)
    for arm, summary in arms.items():
        color, label = ARM_STYLE.get(arm, (None, arm))
        trade.errorbar(summary["new_item_clicks"], summary["clicks"],
                       xerr=np.abs(np.array(summary["ci95"]["new_item_clicks"])[:, None] - summary["new_item_clicks"]),
                       yerr=np.abs(np.array(summary["ci95"]["clicks"])[:, None] - summary["clicks"]),
                       fmt="o", color=color, label=label, capsize=3)
    trade.set_xlabel("clicks on new items")
    trade.set_ylabel("all clicks")
    trade.set_title("the trade-off (mean, 95% interval over seeds)")
    trade.legend(fontsize=8)
    _save(fig, path)
