"""A readable summary of a data run's stats.json."""
from __future__ import annotations

from datetime import datetime, timezone

from tworec.contract import Split


def _day(ts) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def format_summary(stats: dict, out: str) -> str:
    rec = stats["reconciliation"]["interactions"]
    lines = [
        f"dataset {stats['dataset']}  →  {out}",
        f"read {rec['read']:,} interactions, wrote {rec['written']:,}, rejected {rec['rejected']:,}"
        f"  ({'balanced' if rec['balanced'] else 'NOT BALANCED'})",
        f"catalog {stats['catalog_items']:,} items ({stats['cold_items']:,} held out cold), "
        f"{stats['catalog_users']:,} users with side data",
        "",
        f"{'split':<18}{'examples':>10}{'users':>9}{'items':>8}   time range (UTC)",
    ]
    for split in Split:
        s = stats["splits"][split.value]
        lines.append(f"{split.value:<18}{s['examples']:>10,}{s['users']:>9,}{s['items']:>8,}   "
                     f"{_day(s['first_timestamp'])} … {_day(s['last_timestamp'])}")
    rejected = stats.get("rejected", {})
    if rejected:
        lines.append("")
        lines.append("rejected rows (dead_letter/):")
        for kind, reasons in sorted(rejected.items()):
            for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {kind:<12} {reason:<22} {n:>8,}")
    pop = stats.get("train_popularity") or {}
    if pop:
        lines.append("")
        lines.append("train popularity: median %s, p90 %s, max %s interactions/item; top 20%% of items "
                     "hold %.0f%% of interactions" % (pop["p50"], pop["p90"], pop["p100"],
                                                      100 * pop["share_of_interactions_in_top_20pct_items"]))
    lines.append("vocabularies: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats["vocab_sizes"].items())))
    return "\n".join(lines)
