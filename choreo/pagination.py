"""Keyset pagination: the opaque cursor naming a page's last (created_at, id), and the split of
a `limit + 1` fetch into one page and the cursor of the next. Each query keeps its own order."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, TypeVar

from choreo.errors import PermanentError

Item = TypeVar("Item")

# A cursor handed out is about 110 characters; a far longer one is refused before it is parsed,
# so no nesting of JSON arrays can exhaust the recursion limit.
_MAX_CURSOR_LENGTH: Final = 500


class InvalidCursorError(PermanentError):
    """A cursor no list handed out: garbage, edited, or naming a time without a zone."""

    def __init__(self) -> None:
        super().__init__("the cursor is not one this list handed out; start without a cursor")


def encode_cursor(created_at: datetime, item_id: str | uuid.UUID) -> str:
    """The cursor of the item at (`created_at`, `item_id`): URL-safe base64 of JSON, unpadded."""
    position = json.dumps([created_at.isoformat(), str(item_id)])
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) `encode_cursor` put in `cursor`; InvalidCursorError for any other."""
    if len(cursor) > _MAX_CURSOR_LENGTH:
        raise InvalidCursorError
    try:
        match json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))):
            case [str(created_at), str(item_id)]:
                moment = datetime.fromisoformat(created_at)
                canonical_id = str(uuid.UUID(item_id))
            case _:
                raise InvalidCursorError
    except ValueError:  # not base64, UTF-8, JSON, an ISO time or a UUID
        raise InvalidCursorError from None
    if moment.tzinfo is None:
        raise InvalidCursorError
    return moment, canonical_id


def split_page(
    rows: Sequence[Item],
    limit: int,
    position: Callable[[Item], tuple[datetime, str | uuid.UUID]],
) -> tuple[list[Item], str | None]:
    """The first `limit` of `rows` (fetched with `limit + 1`), and the cursor of the page after
    them: that of their last item's `position`, or None when `rows` held no more."""
    page = list(rows[:limit])
    if len(rows) <= limit:
        return page, None
    return page, encode_cursor(*position(page[-1]))
