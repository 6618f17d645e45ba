"""Request checks: every malformed request becomes one ``InvalidRequest`` with a message saying
what is wrong, which the gateway returns as INVALID_ARGUMENT. Ids follow the data contract's rule
(tworec.contract.is_valid_id), so what the data job rejects the gateway rejects too."""
from __future__ import annotations

from tworec import contract

MAX_K = 200
MAX_EXCLUDE = 1000
MAX_CONTEXT_ENTRIES = 32
MAX_CONTEXT_CHARS = 256
MAX_UPSERT_ITEMS = 256
MAX_REMOVE_ITEMS = 1000
MAX_TEXT_CHARS = 10_000
MAX_CATEGORY_CHARS = 100


class InvalidRequest(ValueError):
    pass


def check_k(k: int, limit: int = MAX_K):
    if k <= 0 or k > limit:
        raise InvalidRequest(f"k must be between 1 and {limit}, got {k}")


def check_id(value: str, what: str):
    if not value:
        raise InvalidRequest(f"{what} is empty")
    if not contract.is_valid_id(value):
        shown = value[:40] + ("…" if len(value) > 40 else "")
        raise InvalidRequest(f"{what} {shown!r} is not a valid id: 1-{contract.MAX_ID_LENGTH} printable characters, "
                             f"no whitespace, quotes, backslashes or , ; | separators")


def check_ids(values, what: str, limit: int):
    if len(values) > limit:
        raise InvalidRequest(f"too many {what}: {len(values)} > {limit}")
    for i, value in enumerate(values):
        check_id(value, f"{what}[{i}]")


def check_text(value: str, what: str, limit: int = MAX_TEXT_CHARS):
    if len(value) > limit:
        raise InvalidRequest(f"{what} is too long: {len(value)} characters > {limit}")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value) or "\x7f" in value:
        raise InvalidRequest(f"{what} contains control characters")


def check_recommend(request) -> dict:
    """The request's parsed context: {"now": int | None, "attributes": {key: value}}."""
    check_k(request.k)
    if request.user_id:
        check_id(request.user_id, "user_id")
    check_ids(request.recent_item_ids, "recent_item_ids", contract.HISTORY_LENGTH)
    if len(set(request.recent_item_ids)) != len(request.recent_item_ids):
        raise InvalidRequest("recent_item_ids has duplicates: send each item once, most recent first")
    if len(request.recent_timestamps) > len(request.recent_item_ids):
        raise InvalidRequest("recent_timestamps has more entries than recent_item_ids")
    for t in request.recent_timestamps:
        if not contract.MIN_TIMESTAMP <= t < contract.MAX_TIMESTAMP:
            raise InvalidRequest(f"recent_timestamps value {t} is not unix seconds between 1970 and 2100")
    check_ids(request.exclude_item_ids, "exclude_item_ids", MAX_EXCLUDE)
    if len(request.context) > MAX_CONTEXT_ENTRIES:
        raise InvalidRequest(f"too many context entries: {len(request.context)} > {MAX_CONTEXT_ENTRIES}")
    now, attributes = None, {}
    for key, value in request.context.items():
        check_text(key, "context key", MAX_CONTEXT_CHARS)
        check_text(value, f"context[{key[:40]!r}]", MAX_CONTEXT_CHARS)
        if key == "now":
            try:
                now = int(value)
            except ValueError:
                raise InvalidRequest(f"context['now'] must be unix seconds, got {value[:40]!r}") from None
            if not contract.MIN_TIMESTAMP <= now < contract.MAX_TIMESTAMP:
                raise InvalidRequest(f"context['now'] {now} is not unix seconds between 1970 and 2100")
        elif key:
            attributes[key] = value
    return {"now": now, "attributes": attributes}


MAX_QUERY_CHARS = 512
MAX_FILTER_CATEGORIES = 50


def check_search(request) -> dict:
    """A Search request's parsed context (as ``check_recommend``); the query must say something."""
    check_text(request.query, "query", MAX_QUERY_CHARS)
    if not request.query.strip():
        raise InvalidRequest("query is empty")
    if len(request.categories) > MAX_FILTER_CATEGORIES:
        raise InvalidRequest(f"too many categories: {len(request.categories)} > {MAX_FILTER_CATEGORIES}")
    for i, category in enumerate(request.categories):
        check_text(category, f"categories[{i}]", MAX_CATEGORY_CHARS)
    return check_recommend(request)


def check_upsert(request):
    if not request.items:
        raise InvalidRequest("items is empty")
    if len(request.items) > MAX_UPSERT_ITEMS:
        raise InvalidRequest(f"too many items: {len(request.items)} > {MAX_UPSERT_ITEMS} per call")
    seen = set()
    for i, item in enumerate(request.items):
        check_id(item.item_id, f"items[{i}].item_id")
        if item.item_id in seen:
            raise InvalidRequest(f"items[{i}].item_id {item.item_id!r} appears twice")
        seen.add(item.item_id)
        check_text(item.title, f"items[{i}].title")
        check_text(item.description, f"items[{i}].description")
        if not (item.title.strip() or item.description.strip()):
            raise InvalidRequest(f"items[{i}] has no text: the item tower needs a title or a description")
        if len(item.categories) > contract.MAX_ITEM_CATEGORIES:
            raise InvalidRequest(f"items[{i}] has more than {contract.MAX_ITEM_CATEGORIES} categories")
        for c in item.categories:
            check_text(c, f"items[{i}].categories", MAX_CATEGORY_CHARS)
