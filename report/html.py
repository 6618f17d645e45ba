"""The report page: one self-contained HTML file (inline CSS, figures as relative PNG links)."""
from __future__ import annotations

from html import escape

from tworec.report.figures import MODEL_STYLE

METRICS = ("hitrate@10", "hitrate@50", "hitrate@100", "ndcg@10")
METRIC_LABELS = {"hitrate@10": "HR@10", "hitrate@50": "HR@50", "hitrate@100": "HR@100", "ndcg@10": "NDCG@10"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; } td.segment { vertical-align: top; }
td.best { background: #d9f2d9; font-weight: 700; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85rem; }
.cold { background: #e0ecff; color: #1a4fa0; border-radius: 3px; padding: 0 0.3rem; font-size: 0.75rem; }
.hit { background: #ffe9a8; font-weight: 700; }
.examples td { text-align: left; vertical-align: top; max-width: 16rem; }
.examples ol { margin: 0; padding-left: 1.3rem; }
.note { background: #fff8e5; border-left: 4px solid #f0c000; padding: 0.4rem 0.8rem; }
"""


def model_label(model: str) -> str:
    return MODEL_STYLE.get(model, (None, model))[1]


def ordered(models: dict) -> list:
    """Model names in the figures' order (baselines first), unknown names last."""
    known = [m for m in MODEL_STYLE if m in models]
    return known + [m for m in models if m not in MODEL_STYLE]


def metrics_table(models: dict, segments) -> str:
    """Rows: segment × model; columns: metrics. The best value per segment and metric highlighted."""
    rows = []
    for segment in segments:
        names = [m for m in ordered(models) if segment in models[m]]
        best = {metric: max(models[m][segment][metric] for m in names) for metric in METRICS}
        for j, name in enumerate(names):
            values = models[name][segment]
            cells = "".join(
                f'<td{" class=best" if values[metric] >= best[metric] and values[metric] > 0 else ""}>'
                f"{values[metric]:.4f}</td>" for metric in METRICS)
            lead = (f'<td class="name segment" rowspan="{len(names)}"><strong>{escape(segment)}</strong><br>'
                    f'<span class="meta">n = {values["count"]:,}</span></td>') if j == 0 else ""
            rows.append(f'<tr>{lead}<td class="name">{escape(model_label(name))}</td>{cells}</tr>')
    head = "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRICS)
    return (f'<table class="metrics"><thead><tr><th class="name">segment</th><th class="name">model</th>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def figure(src: str, caption: str) -> str:
    return f'<figure><img src="{escape(src)}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


def key_value_table(rows, header=("", "")) -> str:
    body = "".join(f'<tr><td class="name">{escape(str(k))}</td><td>{escape(str(v))}</td></tr>' for k, v in rows)
    return f'<table><thead><tr><th class="name">{escape(header[0])}</th><th>{escape(header[1])}</th></tr></thead><tbody>{body}</tbody></table>'


def grid_table(header, rows) -> str:
    head = "".join(f'<th class="name">{escape(str(h))}</th>' if i == 0 else f"<th>{escape(str(h))}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="name">{escape(str(c))}</td>' if i == 0 else f"<td>{escape(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _item(title: str, cold: bool, hit: bool) -> str:
    badge = ' <span class="cold">cold</span>' if cold else ""
    text = escape(title) + badge
    return f'<li class="hit">{text}</li>' if hit else f"<li>{text}</li>"


def example_users(examples) -> str:
    """``examples``: dicts with user, target (title, cold), history [titles], tops {model: [(title, cold, hit)]}."""
    blocks = []
    for e in examples:
        history = "".join(f"<li>{escape(t)}</li>" for t in e["history"]) or "<li><em>no history</em></li>"
        target = escape(e["target"][0]) + (' <span class="cold">cold</span>' if e["target"][1] else "")
        models = ordered(e["tops"])
        header = "".join(f"<th>{escape(model_label(m))}</th>" for m in models)
        cells = "".join("<td><ol>" + "".join(_item(*x) for x in e["tops"][m]) + "</ol></td>" for m in models)
        blocks.append(
            f'<h3>user {escape(e["user"])} <span class="meta">({escape(e["why"])})</span></h3>'
            f"<p>next item in the test period: <strong>{target}</strong> (highlighted where a model found it)</p>"
            f'<table class="examples"><thead><tr><th>recent history (latest last)</th>{header}</tr></thead>'
            f"<tbody><tr><td><ol>{history}</ol></td>{cells}</tr></tbody></table>")
    return "".join(blocks)


def page(title: str, meta: str, sections) -> str:
    """``sections``: (heading, html) pairs, in order."""
    body = "".join(f'<section id="{escape(h.lower().replace(" ", "-"))}"><h2>{escape(h)}</h2>{html}</section>'
                   for h, html in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><h1>{escape(title)}</h1><p class="meta">{meta}</p>{body}</body></html>')
