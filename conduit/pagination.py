"""Page-numbered lists: ``page`` (1-based) and ``page_size`` in, headers out.

Lists stay plain JSON arrays as in the API reference; the total and the
neighbouring pages travel in ``X-Total-Count`` and ``Link`` headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from rest_framework.request import Request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    headers: dict[str, str]


def _clamped_int(request: Request, name: str, default: int, maximum: int | None) -> int:
    """Read a paging parameter; a value out of range is clamped, never refused.

    The contract gives the paged lists no 422, so a bad ``page`` or ``page_size``
    gets the nearest sensible page: not a whole number -> the default, below 1 -> 1,
    above the maximum -> the maximum.
    """
    raw = request.query_params.get(name)
    try:
        value = int(raw) if raw not in (None, "") else default
    except ValueError:
        value = default
    value = max(1, value)
    return min(value, maximum) if maximum is not None else value


def paginate(request: Request, queryset: QuerySet, *, total: int | None = None) -> Page:
    """Slice one page out of an ordered queryset.

    ``total`` may be given when the caller keeps a cheaper count than COUNT(*)
    (e.g. a counter column), so large lists stay fast.
    """
    page = _clamped_int(request, "page", 1, None)
    size = _clamped_int(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if total is None:
        total = queryset.count()
    offset = (page - 1) * size
    items = list(queryset[offset : offset + size]) if offset < total else []
    last = max(1, -(-total // size))
    base = request.build_absolute_uri(request.path)

    def link(number: int, rel: str) -> str:
        return f'<{base}?{urlencode({"page": number, "page_size": size})}>; rel="{rel}"'

    links = [link(1, "first")]
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < last:
        links.append(link(page + 1, "next"))
    links.append(link(last, "last"))
    return Page(items=items, headers={"X-Total-Count": str(total), "Link": ", ".join(links)})


PAGE_PARAMETERS_NOTE = (
    f"Paged with `page` (1-based) and `page_size` (default {DEFAULT_PAGE_SIZE}, at most "
    f"{MAX_PAGE_SIZE}; out-of-range values are clamped); the total is in `X-Total-Count` and "
    "neighbouring pages in `Link`."
)
