"""A readable summary of a data run's stats.json, and the check that stops a run which rejected
too much of its input (the message says what to change)."""
from __future__ import annotations

from datetime import datetime, timezone

from tworec.contract import Reject, Split
from tworec.errors import UserError


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


class TooManyRejected(UserError):
    """The data job rejected more than its allowed share of some kind of row; ``stats`` is its
    stats.json."""

    def __init__(self, message: str, stats: dict):
        super().__init__(message)
        self.stats = stats


_ID_RULE = "ids are 1-128 printable characters without spaces, commas, semicolons, |, tabs or quotes"
# What fixes the input (or the command) for each reason.
_FIXES = {
    Reject.EMPTY_LINE: "remove the empty lines",
    Reject.BAD_ENCODING: "save the files as UTF-8",
    Reject.WRONG_COLUMN_COUNT: "one record per line; quote fields that contain the separator",
    Reject.MALFORMED_RECORD: "one record per line, in the source's format (README: 'Your own data')",
    Reject.BAD_USER_ID: _ID_RULE,
    Reject.BAD_ITEM_ID: _ID_RULE,
    Reject.BAD_TIMESTAMP: "timestamps are unix seconds or ISO 8601, between 1970 and 2100",
    Reject.BAD_RATING: "ratings are numbers, or empty",
    Reject.UNKNOWN_ITEM: "every interaction's item must be in the item catalog (items.csv)",
    Reject.DUPLICATE: "each (user, item, timestamp) once",
    Reject.DUPLICATE_ITEM: "each item id once in the catalog",
    Reject.DUPLICATE_USER: "each user id once in users.csv",
    Reject.MISSING_TEXT: "give each item a title or a text",
}
_PLURAL = {"interaction": "interactions", "item": "items", "user": "users"}


def _fix(reason: str, summary: dict, stats: dict) -> str:
    if reason == Reject.RATING_OUT_OF_RANGE.value and summary.get("values"):
        allowed = stats["config"]["rating_range"]
        low, high = min(allowed["low"], summary["values"][0]), max(allowed["high"], summary["values"][1])
        return f"--rating-range {low:g},{high:g} accepts every rating read"
    return _FIXES.get(Reject(reason), "see the dead letters") if reason in Reject._value2member_map_ else ""


def rejection_problem(stats: dict, max_share: float, known_defects=frozenset()) -> str | None:
    """The message for every kind of row rejected above ``max_share`` of those read (rejections
    for the source's ``known_defects`` not counted), or None."""
    problems = []
    for kind, plural in _PLURAL.items():
        rec = stats["reconciliation"][plural]
        reasons = sorted(((r, n) for r, n in stats["rejected"].get(kind, {}).items() if r not in known_defects),
                         key=lambda kv: -kv[1])
        rejected = sum(n for _, n in reasons)
        if not rec["read"] or rejected / rec["read"] <= max_share:
            continue
        problems.append(f"the data job rejected {rejected:,} of {rec['read']:,} {plural} "
                        f"({rejected / rec['read']:.1%}), more than --max-rejected-share {max_share:g}:")
        for reason, n in reasons[:3]:
            summary = stats.get("rejected_examples", {}).get(kind, {}).get(reason, {})
            example = summary.get("example") or {}
            problems.append(f"  {reason:<22}{n:>10,}   e.g. {example.get('origin', '?')}: "
                            f"{example.get('raw', '')[:80]!r} ({example.get('detail', '')})")
            fix = _fix(reason, summary, stats)
            if fix:
                problems.append(f"  {'':<22}{'':>10}   fix: {fix}")
    return "\n".join(problems) if problems else None


def check_rejections(stats: dict, config, layout) -> None:
    """Raises TooManyRejected with ``rejection_problem``'s message."""
    from tworec.beam.sources import known_defects

    problem = rejection_problem(stats, config.max_rejected_share, known_defects(config.dataset))
    if problem:
        raise TooManyRejected(f"{problem}\nEvery rejected row is in {layout.root}/dead_letter/; "
                              f"stats.json has the counts.", stats)
