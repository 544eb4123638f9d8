"""Keyset pagination: cursors round-trip, anything else is refused; a fetch splits into pages."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from choreo.errors import PermanentError
from choreo.pagination import InvalidCursorError, decode_cursor, encode_cursor, split_page

ITEM_ID = "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b"
CREATED_AT = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)


def cursor_of(payload: object) -> str:
    """A cursor built by hand, as a client editing one would."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize("item_id", [ITEM_ID, uuid.UUID(ITEM_ID)])
def test_a_cursor_decodes_to_the_position_it_was_made_from(item_id: str | uuid.UUID) -> None:
    cursor = encode_cursor(CREATED_AT, item_id)

    assert decode_cursor(cursor) == (CREATED_AT, ITEM_ID)
    assert cursor.isascii()
    assert not set(cursor) & set("+/=")  # safe in a query string as it is


def test_a_cursor_keeps_the_time_zone_it_was_made_with() -> None:
    created_at = datetime(2024, 5, 17, 11, 30, tzinfo=timezone(timedelta(hours=2)))

    decoded, _ = decode_cursor(encode_cursor(created_at, ITEM_ID))

    assert decoded == created_at
    assert decoded.utcoffset() == timedelta(hours=2)


def test_an_id_is_given_back_in_canonical_form() -> None:
    cursor = cursor_of([CREATED_AT.isoformat(), ITEM_ID.upper().replace("-", "")])

    assert decode_cursor(cursor) == (CREATED_AT, ITEM_ID)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="not base64 of JSON"),
        pytest.param("bm90IGEgY3Vyc29y", id="base64 of text"),
        pytest.param("é", id="not ASCII"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(), id="not UTF-8"),
        pytest.param("A", id="impossible base64 length"),
        pytest.param(cursor_of({"created_at": "x", "id": "y"}), id="an object"),
        pytest.param(cursor_of([CREATED_AT.isoformat()]), id="one element"),
        pytest.param(cursor_of([CREATED_AT.isoformat(), ITEM_ID, 1]), id="three elements"),
        pytest.param(cursor_of([CREATED_AT.timestamp(), ITEM_ID]), id="time as a number"),
        pytest.param(cursor_of(["yesterday", ITEM_ID]), id="time not ISO"),
        pytest.param(cursor_of([None, ITEM_ID]), id="time null"),
        pytest.param(base64.urlsafe_b64encode(b"[" * 5000).decode(), id="deeply nested"),
        pytest.param(cursor_of([[[[[]]]]]), id="nested arrays"),
    ],
)
def test_garbage_is_an_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor)


def test_a_time_without_a_zone_is_an_invalid_cursor() -> None:
    naive = CREATED_AT.replace(tzinfo=None).isoformat()

    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor_of([naive, ITEM_ID]))


@pytest.mark.parametrize(
    "item_id",
    ["42", "not-a-uuid", ITEM_ID[:-1], "", 42, None, [ITEM_ID]],
    ids=["digits", "words", "one digit short", "empty", "number", "null", "list"],
)
def test_an_id_that_is_not_a_uuid_is_an_invalid_cursor(item_id: object) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor_of([CREATED_AT.isoformat(), item_id]))


def test_an_invalid_cursor_is_permanent_and_says_what_to_do() -> None:
    with pytest.raises(InvalidCursorError) as raised:
        decode_cursor("garbage")

    assert isinstance(raised.value, PermanentError)
    assert not raised.value.retriable
    assert "start without a cursor" in str(raised.value)


def position(item: tuple[datetime, str]) -> tuple[datetime, str]:
    return item


ITEMS = [(CREATED_AT + timedelta(seconds=n), str(uuid.UUID(int=n))) for n in range(5)]


def test_a_fetch_of_more_than_the_limit_is_a_page_and_the_cursor_after_its_last_item() -> None:
    page, next_cursor = split_page(ITEMS[:4], 3, position)

    assert page == ITEMS[:3]
    assert next_cursor is not None
    assert decode_cursor(next_cursor) == ITEMS[2]


@pytest.mark.parametrize("fetched", [0, 1, 3])
def test_a_fetch_of_at_most_the_limit_is_the_last_page(fetched: int) -> None:
    page, next_cursor = split_page(ITEMS[:fetched], 3, position)

    assert page == ITEMS[:fetched]
    assert next_cursor is None
