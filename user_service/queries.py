"""Reads of accounts as the API shows them (never with their password hash); pages newest
first, with `choreo.pagination` cursors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select

from choreo.db import UnitOfWork
from choreo.pagination import decode_cursor, split_page
from choreo.sql import Row
from user_service.domain import (
    SECURITY_NOTICES,
    AccountClosedError,
    Channel,
    NotificationKind,
    Preferences,
    Role,
    stored_preferences,
)
from user_service.tables import notification_preferences, users


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    email: str
    full_name: str
    role: Role
    phone: str | None
    address: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserPage:
    items: list[UserView]
    next_cursor: str | None


VIEW_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.full_name,
    users.c.role,
    users.c.phone,
    users.c.address,
    users.c.created_at,
)


@dataclass(frozen=True, slots=True)
class NotificationPreferencesView:
    """Per kind, the channels chosen (`{"order_updates": {"email": true, "sms": false,
    "in_app": true}, ...}`); `always_on`: the notices no preference changes, and their channels;
    `changed_at`: when the user last changed them (null: the defaults, never changed)."""

    preferences: dict[NotificationKind, dict[Channel, bool]]
    always_on: dict[str, list[Channel]]
    changed_at: datetime | None


def preferences_view(
    preferences: Preferences, changed_at: datetime | None
) -> NotificationPreferencesView:
    return NotificationPreferencesView(
        preferences=preferences,
        always_on={notice: [Channel.EMAIL] for notice in SECURITY_NOTICES[1:]},
        changed_at=changed_at.astimezone(UTC) if changed_at is not None else None,
    )


async def notification_preferences_of(uow: UnitOfWork, user_id: str) -> NotificationPreferencesView:
    """The caller's notification preferences (the defaults until changed)."""
    async with uow:
        row = (
            await uow.session.execute(
                select(
                    users.c.id,
                    notification_preferences.c.preferences,
                    notification_preferences.c.changed_at,
                )
                .select_from(users.outerjoin(notification_preferences))
                .where(users.c.id == user_id, users.c.deleted_at.is_(None))
            )
        ).first()
    if row is None:
        raise AccountClosedError()
    return preferences_view(stored_preferences(row.preferences), row.changed_at)


def user_view(row: Row) -> UserView:
    return UserView(
        id=str(row.id),
        email=row.email,
        full_name=row.full_name,
        role=Role(row.role),
        phone=row.phone,
        address=row.address,
        created_at=row.created_at.astimezone(UTC),
    )


async def get_own_account(uow: UnitOfWork, user_id: str) -> UserView:
    """The caller's account; AccountClosedError when it was deleted (or never existed)."""
    async with uow:
        row = (
            await uow.session.execute(
                select(*VIEW_COLUMNS).where(users.c.id == user_id, users.c.deleted_at.is_(None))
            )
        ).first()
    if row is None:
        raise AccountClosedError()
    return user_view(row)


async def list_users(
    uow: UnitOfWork, *, limit: int, cursor: str | None = None, q: str | None = None
) -> UserPage:
    """Accounts not deleted, newest first; `q` matches part of the e-mail or the name, in any
    case."""
    query = (
        select(*VIEW_COLUMNS)
        .where(users.c.deleted_at.is_(None))
        .order_by(users.c.created_at.desc(), users.c.id.desc())
    )
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                users.c.email.ilike(pattern, escape="\\"),
                users.c.full_name.ilike(pattern, escape="\\"),
            )
        )
    if cursor is not None:
        created_at, user_id = decode_cursor(cursor)
        query = query.where(
            or_(
                users.c.created_at < created_at,
                and_(users.c.created_at == created_at, users.c.id < user_id),
            )
        )
    async with uow:
        rows = (await uow.session.execute(query.limit(limit + 1))).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    return UserPage([user_view(row) for row in page], next_cursor)
