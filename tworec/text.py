"""How an item's text is composed from its parts: one function for the data pipeline and for the
gateway's UpsertItems, so a live-added item is read exactly as catalog items were at training."""
from __future__ import annotations

import html
import re

_TAG_RE = re.compile(r"<[^>]*>?")
_SPACE_RE = re.compile(r"\s+")


def clean(text: str) -> str:
    """HTML-unescape, drop tags (also unterminated fragments) and control characters, squeeze space."""
    text = html.unescape(html.unescape(text or ""))
    text = _TAG_RE.sub(" ", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return _SPACE_RE.sub(" ", text).strip()


def compose_item_text(title: str = "", description: str = "", categories=(), brand: str = "") -> str:
    parts = []
    for part in (title, description):
        part = clean(part)
        if part:
            parts.append(part if part[-1] in ".!?" else part + ".")
    cats = [clean(c) for c in categories if clean(c)]
    if cats:
        parts.append("Categories: " + ", ".join(cats) + ".")
    brand = clean(brand)
    if brand:
        parts.append("By " + brand + ".")
    return " ".join(parts)
