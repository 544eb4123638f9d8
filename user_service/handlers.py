"""The user service's commands: one async function each. The service consumes no events.

Each handler opens its unit(s) of work itself: the slow password hashing runs between
transactions, never while one holds a connection or a row lock. Accounts' rows and their
events (UserRegistered, UserUpdated, UserDeleted, PasswordResetRequested, SessionsRevoked on
`user.event`, keyed by the user id) commit together.

A session is a refresh-token family: its access tokens name it (`sid`). Ending one (a logout, a
password change or reset, a refresh token used twice) revokes its refresh tokens and, in the
same transaction, its access tokens: the kit's `revoked_sessions` row here, SessionsRevoked for
every other service (choreo.revocations).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo import records, revocations
from choreo.db import UnitOfWork
from choreo.sealing import Sealer, password_reset_context
from user_service import domain
from user_service.domain import (
    AccountClosedError,
    CannotDeleteSelfError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidInputError,
    InvalidRefreshTokenError,
    InvalidResetTokenError,
    Profile,
    RefreshOutcome,
    RevokeReason,
    Role,
    SessionEnd,
    StoredRefreshToken,
    StoredResetToken,
    UserNotFoundError,
    WrongCurrentPasswordError,
)
from user_service.passwords import HashingBusyError, Passwords
from user_service.queries import (
    VIEW_COLUMNS,
    NotificationPreferencesView,
    UserView,
    preferences_view,
    user_view,
)
from user_service.tables import (
    notification_preferences,
    password_reset_tokens,
    refresh_tokens,
    users,
)
from user_service.tokens import RefreshSecret, TokenIssuer, TokenPair, new_refresh_secret
from user_service.tokens import refresh_digest as digest_of

log = logging.getLogger(__name__)

ADMIN_FULL_NAME = "Administrator"


async def register(
    uow: UnitOfWork,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    full_name: str,
    role: Role = Role.CUSTOMER,
    traceparent: str | None = None,
) -> UserView:
    """Create an account → UserRegistered; EmailTakenError when the address has one (even a
    deleted one: addresses are never reused)."""
    email = domain.normalise_email(email)
    full_name = domain.normalise_full_name(full_name)
    password = domain.check_password_policy(password, email=email, full_name=full_name)
    password_hash = await passwords.hash(password)
    async with uow:
        user = await _insert_account(uow, email, password_hash, full_name, role, traceparent)
    if user is None:
        raise EmailTakenError()
    return user


async def seed_admin(uow: UnitOfWork, passwords: Passwords, *, email: str, password: str) -> bool:
    """Create the admin account unless an account has `email` (replicas starting together may
    all try: one creates it); whether this call created it."""
    email = domain.normalise_email(email)
    async with uow:
        existing = (
            await uow.session.execute(
                select(users.c.role, users.c.deleted_at).where(users.c.email == email)
            )
        ).first()
    if existing is not None:
        if existing.role != Role.ADMIN or existing.deleted_at is not None:
            log.warning(
                "the admin e-mail address belongs to an account that is %s: no admin seeded",
                "deleted" if existing.deleted_at is not None else f"a {existing.role}",
            )
        return False
    password_hash = await passwords.hash(domain.check_password_policy(password, email=email))
    async with uow:
        user = await _insert_account(
            uow, email, password_hash, ADMIN_FULL_NAME, Role.ADMIN, traceparent=None
        )
    if user is not None:
        log.info("seeded the admin account %s", user.id)
    return user is not None


async def login(
    uow: UnitOfWork,
    passwords: Passwords,
    tokens: TokenIssuer,
    *,
    email: str,
    password: str,
) -> TokenPair:
    """A new token pair (a new refresh token family) for the right e-mail and password;
    InvalidCredentialsError otherwise, after the same work whatever was wrong."""
    try:
        email = domain.normalise_email(email)
        password = domain.normalise_password(password)
    except InvalidInputError:
        await passwords.verify(None, "")
        raise InvalidCredentialsError() from None
    async with uow:
        account = (
            await uow.session.execute(
                select(
                    users.c.id,
                    users.c.email,
                    users.c.role,
                    users.c.password_hash,
                    users.c.deleted_at,
                ).where(users.c.email == email)
            )
        ).first()
    matches = await passwords.verify(None if account is None else account.password_hash, password)
    if account is None or not matches or account.deleted_at is not None:
        raise InvalidCredentialsError()
    user_id, role = str(account.id), Role(account.role)
    rehashed = None
    if passwords.needs_rehash(account.password_hash):
        # Worth doing, not worth refusing a login for: the next login tries again.
        with contextlib.suppress(HashingBusyError):
            rehashed = await passwords.hash(password)
    refresh = new_refresh_secret()
    async with uow:
        if rehashed is not None:
            await uow.session.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == account.password_hash)
                .values(password_hash=rehashed, updated_at=func.now())
            )
        session_id = str(uuid.uuid4())
        await _insert_refresh_token(uow, tokens, user_id, session_id, refresh)
    return tokens.pair(user_id, role, account.email, refresh, session_id)


async def refresh(uow: UnitOfWork, tokens: TokenIssuer, *, refresh_token: str) -> TokenPair:
    """Rotate a refresh token: a new pair, the presented token revoked. A token presented again
    after its rotation revokes its whole family (every token of the same login) and, like an
    unknown, expired or closed account's token, raises InvalidRefreshTokenError."""
    now = datetime.now(UTC)
    digest = digest_of(refresh_token)
    async with uow:
        owner = (
            await uow.session.execute(
                select(refresh_tokens.c.user_id).where(refresh_tokens.c.token_digest == digest)
            )
        ).scalar_one_or_none()
        if owner is not None:
            await _lock_account(uow, str(owner))
        row = (
            await uow.session.execute(
                select(
                    refresh_tokens.c.id,
                    refresh_tokens.c.family_id,
                    refresh_tokens.c.expires_at,
                    refresh_tokens.c.revoked_at,
                    users.c.id.label("user_id"),
                    users.c.email,
                    users.c.role,
                    users.c.deleted_at,
                )
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.token_digest == digest)
                .with_for_update(of=refresh_tokens)
            )
        ).first()
        stored = None
        if row is not None:
            stored = StoredRefreshToken(
                expires_at=row.expires_at,
                revoked_at=row.revoked_at,
                account_deleted=row.deleted_at is not None,
            )
        outcome = domain.decide_refresh(stored, now)
        if row is not None and outcome is RefreshOutcome.REUSED:
            revoked = await _revoke(
                uow, refresh_tokens.c.family_id == row.family_id, RevokeReason.REUSE_DETECTED
            )
            await _end_sessions(
                uow, tokens, str(row.user_id), [str(row.family_id)], SessionEnd.REUSE_DETECTED
            )
            log.warning(
                "a revoked refresh token of user %s was presented again: revoked %d live "
                "token(s) of its family %s",
                row.user_id,
                revoked,
                row.family_id,
            )
        pair = None
        if row is not None and outcome is RefreshOutcome.ROTATE:
            new = new_refresh_secret()
            user_id, family_id = str(row.user_id), str(row.family_id)
            new_id = await _insert_refresh_token(uow, tokens, user_id, family_id, new)
            await _revoke(uow, refresh_tokens.c.id == row.id, RevokeReason.ROTATED, new_id)
            pair = tokens.pair(user_id, Role(row.role), row.email, new, family_id)
    # Raised after the block, so that a family revoked on reuse stays revoked.
    if pair is None:
        raise InvalidRefreshTokenError()
    return pair


async def logout(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    user_id: str,
    *,
    refresh_token: str | None,
    traceparent: str | None = None,
) -> int:
    """End the caller's session, its refresh and access tokens: the family of `refresh_token`
    when it is one of the caller's, every session of the caller without one; how many refresh
    tokens were revoked. Idempotent: a token unknown, another's, or revoked already changes
    nothing."""
    async with uow:
        await _lock_account(uow, user_id)
        if refresh_token is None:
            which = refresh_tokens.c.user_id == user_id
            sessions = await _recent_sessions(uow, tokens, user_id)
        else:
            family = (
                await uow.session.execute(
                    select(refresh_tokens.c.family_id).where(
                        refresh_tokens.c.token_digest == digest_of(refresh_token),
                        refresh_tokens.c.user_id == user_id,
                    )
                )
            ).scalar_one_or_none()
            if family is None:
                return 0
            which = refresh_tokens.c.family_id == family
            sessions = [str(family)]
        revoked = await _revoke(uow, which, RevokeReason.LOGGED_OUT)
        await _end_sessions(uow, tokens, user_id, sessions, SessionEnd.LOGGED_OUT, traceparent)
        return revoked


async def change_password(
    uow: UnitOfWork,
    passwords: Passwords,
    tokens: TokenIssuer,
    user_id: str,
    *,
    current_password: str,
    new_password: str,
    traceparent: str | None = None,
) -> TokenPair:
    """Set a new password for the caller who knows the current one: every session (refresh and
    access tokens) and outstanding reset token of the account is revoked, and a new pair (a new
    session) handed back. WrongCurrentPasswordError, or PasswordPolicyError for a new password
    the policy refuses (checked first: it costs no hashing)."""
    async with uow:
        account = (
            await uow.session.execute(
                select(users.c.email, users.c.full_name, users.c.role, users.c.password_hash).where(
                    users.c.id == user_id, users.c.deleted_at.is_(None)
                )
            )
        ).first()
    if account is None:
        raise AccountClosedError()
    new_password = domain.check_password_policy(
        new_password, email=account.email, full_name=account.full_name
    )
    try:
        current_password = domain.normalise_password(current_password)
    except InvalidInputError:
        current_password = ""
    if not await passwords.verify(account.password_hash, current_password):
        raise WrongCurrentPasswordError()
    new_hash = await passwords.hash(new_password)
    refresh = new_refresh_secret()
    async with uow:
        changed = await uow.session.execute(
            update(users)
            .where(
                users.c.id == user_id,
                users.c.deleted_at.is_(None),
                # Not if it changed meanwhile: the current password checked is no longer it.
                users.c.password_hash == account.password_hash,
            )
            .values(password_hash=new_hash, updated_at=func.now())
            .returning(users.c.id)
        )
        if changed.first() is None:
            raise WrongCurrentPasswordError()
        await _revoke(uow, refresh_tokens.c.user_id == user_id, RevokeReason.PASSWORD_CHANGED)
        sessions = await _recent_sessions(uow, tokens, user_id)
        await _end_sessions(
            uow, tokens, user_id, sessions, SessionEnd.PASSWORD_CHANGED, traceparent
        )
        await _void_reset_tokens(uow, user_id)
        session_id = str(uuid.uuid4())  # after the ending: this session goes on
        await _insert_refresh_token(uow, tokens, user_id, session_id, refresh)
    log.info("user %s changed their password; every other session was revoked", user_id)
    return tokens.pair(user_id, Role(account.role), account.email, refresh, session_id)


async def request_password_reset(
    uow: UnitOfWork,
    *,
    email: str,
    ttl: timedelta,
    sealer: Sealer | None,
    traceparent: str | None = None,
) -> None:
    """For a live account with this address, a single-use reset token (its digest stored) →
    PasswordResetRequested, which the notification service e-mails: the token sealed to its key
    by `sealer` (bound to the account and the expiry), or in clear without one (dev and test
    only). Nothing for any other address, after the same work but the insert: the caller
    learns nothing either way."""
    secret = new_refresh_secret()  # made whether or not it is sent: same work both ways
    try:
        email = domain.normalise_email(email)
    except InvalidInputError:
        email = ""
    expires_at = datetime.now(UTC) + ttl
    async with uow:
        account = (
            await uow.session.execute(
                select(users.c.id, users.c.email, users.c.full_name).where(
                    users.c.email == email, users.c.deleted_at.is_(None)
                )
            )
        ).first()
        # Sealed whether or not it is sent (for no one when there is no account), like the
        # secret above.
        user_id = str(account.id) if account is not None else str(uuid.uuid4())
        context = password_reset_context(user_id, expires_at)
        sealed = sealer.seal(secret.token.encode(), context) if sealer is not None else None
        if account is None:
            return
        await uow.session.execute(
            insert(password_reset_tokens).values(
                id=str(uuid.uuid4()),
                user_id=user_id,
                token_digest=secret.digest,
                expires_at=expires_at,
            )
        )
        requested = records.PasswordResetRequested(
            user_id=str(user_id),
            email=account.email,
            full_name=account.full_name,
            # The token itself only when it cannot be sealed: an empty one says "sealed".
            token="" if sealed is not None else secret.token,
            expires_at=expires_at,
            sealed_token=sealed,
        )
        uow.publish(requested, traceparent=traceparent)
    log.info("a password reset of user %s was requested", user_id)


async def confirm_password_reset(
    uow: UnitOfWork,
    passwords: Passwords,
    tokens: TokenIssuer,
    *,
    token: str,
    new_password: str,
    traceparent: str | None = None,
) -> None:
    """Set the password of the account a usable reset token was sent for: the token is used,
    the account's other reset tokens and every session (refresh and access tokens) revoked.
    InvalidResetTokenError
    for a token unknown, expired, used or revoked; PasswordPolicyError for a refused password."""
    digest = digest_of(token)
    async with uow:
        row = await _reset_token(uow, digest, lock=False)
    if row is None or not domain.reset_token_usable(_stored(row), datetime.now(UTC)):
        raise InvalidResetTokenError()
    new_password = domain.check_password_policy(
        new_password, email=row.email, full_name=row.full_name
    )
    new_hash = await passwords.hash(new_password)
    async with uow:
        # Again, locked: two confirms of one token race here, and one finds it used.
        row = await _reset_token(uow, digest, lock=True)
        if row is None or not domain.reset_token_usable(_stored(row), datetime.now(UTC)):
            raise InvalidResetTokenError()
        user_id = str(row.user_id)
        await uow.session.execute(
            update(password_reset_tokens)
            .where(password_reset_tokens.c.id == row.id)
            .values(used_at=func.now())
        )
        await _void_reset_tokens(uow, user_id)
        await uow.session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=new_hash, updated_at=func.now())
        )
        await _revoke(uow, refresh_tokens.c.user_id == user_id, RevokeReason.PASSWORD_CHANGED)
        sessions = await _recent_sessions(uow, tokens, user_id)
        await _end_sessions(uow, tokens, user_id, sessions, SessionEnd.PASSWORD_RESET, traceparent)
    log.info("user %s set a new password with a reset token; every session was revoked", user_id)


async def update_profile(
    uow: UnitOfWork,
    user_id: str,
    changes: Mapping[str, str | None],
    *,
    traceparent: str | None = None,
) -> UserView:
    """Apply the caller's profile changes → UserUpdated (the full current details) when
    anything changed."""
    async with uow:
        row = (
            await uow.session.execute(
                select(*VIEW_COLUMNS)
                .where(users.c.id == user_id, users.c.deleted_at.is_(None))
                .with_for_update()
            )
        ).first()
        if row is None:
            raise AccountClosedError()
        current = Profile(full_name=row.full_name, phone=row.phone, address=row.address)
        updated = domain.change_profile(current, changes)
        if updated is None:
            return user_view(row)
        now = datetime.now(UTC)
        row = (
            await uow.session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    full_name=updated.full_name,
                    phone=updated.phone,
                    address=updated.address,
                    updated_at=now,
                )
                .returning(*VIEW_COLUMNS)
            )
        ).one()
        user_updated = records.UserUpdated(
            user_id=str(user_id),
            email=row.email,
            full_name=updated.full_name,
            phone=updated.phone,
            updated_at=now,
        )
        uow.publish(user_updated, traceparent=traceparent)
    return user_view(row)


async def change_notification_preferences(
    uow: UnitOfWork,
    user_id: str,
    changes: Mapping[str, Mapping[str, bool]],
    *,
    traceparent: str | None = None,
) -> NotificationPreferencesView:
    """Apply the caller's preference changes → NotificationPreferencesChanged (all of them, as
    they now are) when anything changed, in the same transaction as the row."""
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
                .with_for_update(of=users)
            )
        ).first()
        if row is None:
            raise AccountClosedError()
        current = domain.stored_preferences(row.preferences)
        updated = domain.change_preferences(current, changes)
        if updated is None:
            return preferences_view(current, row.changed_at)
        now = datetime.now(UTC)
        stored = {
            kind.value: {channel.value: on for channel, on in channels.items()}
            for kind, channels in updated.items()
        }
        statement = insert(notification_preferences).values(
            user_id=user_id, preferences=stored, changed_at=now
        )
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[notification_preferences.c.user_id],
                set_={"preferences": stored, "changed_at": now},
            )
        )
        uow.publish(
            records.NotificationPreferencesChanged(
                user_id=str(user_id),
                preferences=tuple(
                    records.NotificationPreference(
                        kind=kind.value,
                        email=channels[domain.Channel.EMAIL],
                        sms=channels[domain.Channel.SMS],
                        in_app=channels[domain.Channel.IN_APP],
                    )
                    for kind, channels in updated.items()
                ),
                changed_at=now,
            ),
            traceparent=traceparent,
        )
    return preferences_view(updated, now)


async def delete_user(
    uow: UnitOfWork, user_id: str, *, actor_id: str, traceparent: str | None = None
) -> None:
    """Soft-delete an account and revoke its refresh tokens → UserDeleted; UserNotFoundError
    for an unknown or already deleted one, CannotDeleteSelfError for the caller's own."""
    if user_id == actor_id:
        raise CannotDeleteSelfError()
    now = datetime.now(UTC)
    async with uow:
        deleted = await uow.session.execute(
            update(users)
            .where(users.c.id == user_id, users.c.deleted_at.is_(None))
            .values(deleted_at=now, updated_at=now)
            .returning(users.c.id)
        )
        if deleted.first() is None:
            raise UserNotFoundError(user_id)
        await _revoke(uow, refresh_tokens.c.user_id == user_id, RevokeReason.ACCOUNT_DELETED)
        await revocations.revoke(uow.session, user_id, now)  # its access tokens too, here
        user_deleted = records.UserDeleted(user_id=str(user_id), deleted_at=now)
        uow.publish(user_deleted, traceparent=traceparent)


async def purge_expired_refresh_tokens(uow: UnitOfWork) -> int:
    """Delete refresh tokens and password-reset tokens past their expiry (refused anyway); how
    many."""
    async with uow:
        purged = 0
        for table in (refresh_tokens, password_reset_tokens):
            result = await uow.session.execute(
                table.delete().where(table.c.expires_at < func.now()).returning(table.c.id)
            )
            purged += len(result.all())
        return purged


async def _insert_account(
    uow: UnitOfWork,
    email: str,
    password_hash: str,
    full_name: str,
    role: Role,
    traceparent: str | None,
) -> UserView | None:
    """The new account → UserRegistered, or None when the e-mail address is taken."""
    user_id = str(uuid.uuid4())
    row = (
        await uow.session.execute(
            insert(users)
            .values(
                id=user_id,
                email=email,
                password_hash=password_hash,
                full_name=full_name,
                role=role,
            )
            .on_conflict_do_nothing(index_elements=[users.c.email])
            .returning(*VIEW_COLUMNS)
        )
    ).first()
    if row is None:
        return None
    user = user_view(row)
    registered = records.UserRegistered(
        user_id=str(user_id),
        email=email,
        full_name=full_name,
        role=str(role),
        registered_at=user.created_at,
    )
    uow.publish(registered, traceparent=traceparent)
    return user


async def _insert_refresh_token(
    uow: UnitOfWork, tokens: TokenIssuer, user_id: str, family_id: str, secret: RefreshSecret
) -> str:
    token_id = str(uuid.uuid4())
    await uow.session.execute(
        insert(refresh_tokens).values(
            id=token_id,
            family_id=family_id,
            user_id=user_id,
            token_digest=secret.digest,
            expires_at=datetime.now(UTC) + tokens.refresh_ttl,
        )
    )
    return token_id


async def _lock_account(uow: UnitOfWork, user_id: str) -> None:
    """Take the account's row lock (FOR NO KEY UPDATE) until the transaction ends.

    A refresh takes it before it rotates a token, and so does every change that ends sessions
    (logout here; a password change, a reset and a deletion by updating the row): whichever
    comes second waits, then sees what the first committed. Without it, a refresh racing a
    logout inserted its new refresh token after the logout had revoked the family, and the new
    token lived on. The account's row is always locked before its refresh tokens, so the two
    cannot deadlock."""
    await uow.session.execute(
        select(users.c.id).where(users.c.id == user_id).with_for_update(key_share=True)
    )


async def _revoke(
    uow: UnitOfWork,
    which: ColumnElement[bool],
    reason: RevokeReason,
    replaced_by: str | None = None,
) -> int:
    """Revoke the live refresh tokens `which` selects; how many."""
    result = await uow.session.execute(
        update(refresh_tokens)
        .where(which, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason, replaced_by=replaced_by)
        .returning(refresh_tokens.c.id)
    )
    return len(result.all())


async def _recent_sessions(uow: UnitOfWork, tokens: TokenIssuer, user_id: str) -> list[str]:
    """The account's sessions that may hold an access token not expired yet: every family with
    a refresh token issued (each with an access token) within the access-token lifetime, and
    the margin of choreo.revocations for clocks that differ."""
    since = func.now() - (tokens.access_ttl + revocations.REVOCATION_MARGIN)
    rows = await uow.session.execute(
        select(refresh_tokens.c.family_id)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.created_at > since)
        .distinct()
    )
    return [str(family_id) for (family_id,) in rows]


async def _end_sessions(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    user_id: str,
    session_ids: list[str],
    reason: SessionEnd,
    traceparent: str | None = None,
) -> None:
    """Revoke the access tokens of `session_ids` here (choreo.revocations) → SessionsRevoked,
    naming those not revoked before, for every other service; nothing when there are none. The
    revocation lasts until the last of those tokens has expired."""
    now = datetime.now(UTC)
    until = now + tokens.access_ttl + revocations.REVOCATION_MARGIN
    ended = await revocations.revoke_sessions(
        uow.session, user_id, session_ids, reason=reason, at=now, until=until
    )
    if ended:
        revoked = records.SessionsRevoked(
            user_id=str(user_id),
            session_ids=tuple(str(session_id) for session_id in ended),
            reason=str(reason),
            revoked_at=now,
            expires_at=until,
        )
        uow.publish(revoked, traceparent=traceparent)


async def _reset_token(uow: UnitOfWork, digest: bytes, *, lock: bool) -> Any:
    statement = (
        select(
            password_reset_tokens.c.id,
            password_reset_tokens.c.expires_at,
            password_reset_tokens.c.used_at,
            password_reset_tokens.c.revoked_at,
            users.c.id.label("user_id"),
            users.c.email,
            users.c.full_name,
            users.c.deleted_at,
        )
        .join(users, users.c.id == password_reset_tokens.c.user_id)
        .where(password_reset_tokens.c.token_digest == digest)
    )
    if lock:
        statement = statement.with_for_update(of=password_reset_tokens)
    return (await uow.session.execute(statement)).first()


def _stored(row: Any) -> StoredResetToken:
    return StoredResetToken(
        expires_at=row.expires_at,
        used_at=row.used_at,
        revoked_at=row.revoked_at,
        account_deleted=row.deleted_at is not None,
    )


async def _void_reset_tokens(uow: UnitOfWork, user_id: str) -> None:
    """Revoke the account's outstanding password-reset tokens."""
    await uow.session.execute(
        update(password_reset_tokens)
        .where(
            password_reset_tokens.c.user_id == user_id,
            password_reset_tokens.c.used_at.is_(None),
            password_reset_tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=func.now())
    )
