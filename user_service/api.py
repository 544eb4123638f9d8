"""The user service's HTTP API: registration, login, token refresh, the signing keys (JWKS),
the caller's profile, and the admins' user list and deletion.

Routes parse and validate (with the domain's rules, so a refusal names the field), call a
handler or a query, and shape the answer; domain errors are mapped to statuses in
ERROR_STATUSES. No response or error ever repeats a password. A password the policy refuses is
a 422 whose detail's `type` names the rule (`password_common`, ...).

Credential routes (login, registration, refresh) count each call against the client's address
and the account it names (attempts.py): 429 `rate_limited` with `Retry-After` past the limits,
503 `service_busy` with `Retry-After` when the hashing queue is full. The client's address is
the connection's peer, or what a trusted proxy (uvicorn's FORWARDED_ALLOW_IPS, loopback by
default: the gateway in the stack) put last in X-Forwarded-For. Routes answering with tokens
are on `token_router`, whose every answer says `Cache-Control: no-store` (RFC 6749 §5.1).

Account lifecycle: `POST /auth/logout` (signed in) revokes the session of the refresh token given
(its family), or every session of the caller without one: 204, idempotent. `POST
/auth/password` (signed in, on `token_router`) needs the current password (a wrong one is 403
`invalid_current_password`: the caller's token is fine, the change is refused), sets a new one
that passes the policy, revokes every session and reset token of the account and answers a new
token pair. `POST /auth/password-reset` (public) answers 202 with the same body whatever the
address; a live account's gets an e-mail with a single-use token (the notification service
sends it). `POST /auth/password-reset/confirm` (public) sets the password with that token, once:
204; a token unknown, expired, used or revoked is 400 `invalid_reset_token`. A session ended by
any of them ends with its access tokens (their `sid`): every service refuses them within
seconds (choreo.revocations).

Profile fields: `phone` is a valid number with its country code (a leading +, digits, optional
spaces, ( ) . / -, at most 32 characters), stored and shown in E.164 (`+442079460018`);
`address` is free text (lines separated by newlines), at most 500 characters; null or an empty
string removes either.

Notification preferences (`GET`/`PUT /users/me/notification-preferences`): per kind
(order_updates, payment_updates, account_notices, low_stock) the channels (email, sms, in_app)
it goes by; defaults e-mail and in-app on, SMS off. A PUT `{"preferences": {kind: {channel:
bool}}}` changes the kinds and channels it names and keeps the others; an unknown kind or
channel is 422 `validation_error`; security notices (a password reset, always by e-mail) are
no settable kind: a PUT naming them is 422 `preference_not_settable`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from choreo.deps import AdminUser, CurrentUser, Uow, optional_resource, resource
from choreo.pagination import InvalidCursorError
from choreo.sealing import Sealer
from choreo.web import ApiError, current_traceparent
from user_service import domain, handlers, queries
from user_service.attempts import (
    PASSWORD_RESET,
    REGISTRATION,
    SIGN_IN,
    AttemptLimiter,
    TooManyAttemptsError,
)
from user_service.domain import (
    AccountClosedError,
    CannotDeleteSelfError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidInputError,
    InvalidRefreshTokenError,
    InvalidResetTokenError,
    NotSettableError,
    PasswordPolicyError,
    UserNotFoundError,
    WrongCurrentPasswordError,
)
from user_service.passwords import BUSY_RETRY_AFTER_SECONDS, HashingBusyError, Passwords
from user_service.queries import NotificationPreferencesView, UserPage, UserView
from user_service.tokens import TokenIssuer, TokenPair

JWKS_MAX_AGE_SECONDS: Final = 300
# Bounds on what login and refresh read: anything longer can match no account or token.
_MAX_LOGIN_FIELD_LENGTH: Final = 1024
_MAX_REFRESH_TOKEN_LENGTH: Final = 512

ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    EmailTakenError: (409, "email_taken"),
    InvalidCredentialsError: (401, "invalid_credentials"),
    InvalidRefreshTokenError: (401, "invalid_refresh_token"),
    WrongCurrentPasswordError: (403, "invalid_current_password"),
    InvalidResetTokenError: (400, "invalid_reset_token"),
    AccountClosedError: (401, "unauthenticated"),
    UserNotFoundError: (404, "user_not_found"),
    CannotDeleteSelfError: (409, "cannot_delete_self"),
    NotSettableError: (422, "preference_not_settable"),
    InvalidInputError: (422, "validation_error"),
    InvalidCursorError: (422, "invalid_cursor"),
}


async def _no_store(response: Response) -> None:
    """RFC 6749 §5.1: an answer holding tokens is kept by no cache, HTTP/1.0 ones included."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


router = APIRouter(prefix="/api/v1", tags=["users"])
# Every route answering with tokens is on this router, so none answers without `no-store`.
token_router = APIRouter(prefix="/api/v1", tags=["users"], dependencies=[Depends(_no_store)])


def _refusal(error: InvalidInputError) -> ValueError:
    """A domain rule's refusal as a validation error: a password's names the rule it breaks."""
    if isinstance(error, PasswordPolicyError):
        return PydanticCustomError(error.rule.value, str(error))
    return ValueError(str(error))


def _rule(check: Callable[[str], str | None]) -> AfterValidator:
    """A domain rule as a field validator: its refusal becomes a 422 naming the field."""

    def validate(value: str) -> str | None:
        try:
            return check(value)
        except InvalidInputError as error:
            raise _refusal(error) from None

    return AfterValidator(validate)


Email = Annotated[
    str, StringConstraints(max_length=_MAX_LOGIN_FIELD_LENGTH), _rule(domain.normalise_email)
]
FullName = Annotated[str, _rule(domain.normalise_full_name)]
Phone = Annotated[str, _rule(domain.normalise_phone)]
Address = Annotated[str, _rule(domain.normalise_address)]
LoginField = Annotated[str, StringConstraints(max_length=_MAX_LOGIN_FIELD_LENGTH)]
Limit = Annotated[int, Query(ge=1, le=100)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # In this order: the password is checked against the address and the name (when valid).
    email: Email
    full_name: FullName
    password: str

    @field_validator("password")
    @classmethod
    def _password_policy(cls, password: str, info: ValidationInfo) -> str:
        try:
            return domain.check_password_policy(
                password, email=info.data.get("email"), full_name=info.data.get("full_name")
            )
        except InvalidInputError as error:
            raise _refusal(error) from None


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: LoginField
    password: LoginField


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[
        str, StringConstraints(min_length=1, max_length=_MAX_REFRESH_TOKEN_LENGTH)
    ]


RefreshToken = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_REFRESH_TOKEN_LENGTH)]


class LogoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: RefreshToken | None = None


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: LoginField
    new_password: LoginField


class PasswordResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Not checked as an address: a refusal would tell what the answer must not.
    email: LoginField


class PasswordResetConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: RefreshToken
    new_password: LoginField


class PasswordResetOut(BaseModel):
    message: str


PASSWORD_RESET_ANSWER: Final = (
    "If an account has this e-mail address, a link to reset its password is on its way."
)


class ProfileIn(BaseModel):
    """Fields to change; absent ones stay."""

    model_config = ConfigDict(extra="forbid")

    full_name: FullName | None = None
    phone: Phone | None = None
    address: Address | None = None

    def changes(self) -> dict[str, Any]:
        values: dict[str, Any] = self.model_dump(exclude_unset=True)
        return values


class NotificationPreferencesIn(BaseModel):
    """Per kind, the channels to change: `{"order_updates": {"email": false, "sms": true}}`."""

    model_config = ConfigDict(extra="forbid")

    preferences: dict[
        Annotated[str, StringConstraints(max_length=64)],
        dict[Annotated[str, StringConstraints(max_length=64)], StrictBool],
    ]


class TokensOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    # Seconds until the access token expires.
    expires_in: int
    refresh_token: str

    @classmethod
    def of(cls, pair: TokenPair) -> TokensOut:
        return cls(
            access_token=pair.access_token,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
        )


async def _own_id(principal: CurrentUser) -> str:
    """The caller's user id; a token whose subject is no user id names no account."""
    try:
        return str(uuid.UUID(principal.user_id))
    except ValueError:
        raise AccountClosedError() from None


PasswordsDep = Annotated[Passwords, Depends(resource("passwords", Passwords))]
TokensDep = Annotated[TokenIssuer, Depends(resource("tokens", TokenIssuer))]
AttemptsDep = Annotated[AttemptLimiter, Depends(resource("attempts", AttemptLimiter))]
OwnId = Annotated[str, Depends(_own_id)]
PasswordResetTtl = Annotated[timedelta, Depends(resource("password_reset_ttl", timedelta))]
ResetTokenSealer = Annotated[
    Sealer | None, Depends(optional_resource("reset_token_sealer", Sealer))
]


def client_address(request: Request) -> str:
    """Where the request came from (uvicorn has already believed a trusted proxy's header)."""
    return request.client.host if request.client else "unknown"


@contextlib.contextmanager
def credential_attempt(
    attempts: AttemptLimiter,
    request: Request,
    *,
    kind: str = SIGN_IN,
    email: str | None,
    keep_address: bool = False,
    keep_all: bool = False,
) -> Iterator[None]:
    """One attempt on a credential route: 429 when its address or account has made too many;
    its tokens given back when it succeeds (with `keep_address`, the account's only; with
    `keep_all`, none) or when the hashing queue turns it away (503: it was never made)."""
    try:
        attempt = attempts.take(kind=kind, address=client_address(request), email=email)
    except TooManyAttemptsError as error:
        retry_after = {"Retry-After": str(error.retry_after_seconds)}
        raise ApiError(429, "rate_limited", str(error), headers=retry_after) from None
    try:
        yield
    except HashingBusyError as error:
        attempts.give_back(attempt)
        retry_after = {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)}
        raise ApiError(503, "service_busy", str(error), headers=retry_after) from None
    if not keep_all:
        attempts.give_back(attempt, keep_address=keep_address)


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterIn, request: Request, uow: Uow, passwords: PasswordsDep, attempts: AttemptsDep
) -> UserView:
    """A new customer account; the address and the name are normalised, the password must
    pass the policy."""
    # The address's attempt is kept even when it succeeds: each account costs a hash and a row.
    with credential_attempt(
        attempts, request, kind=REGISTRATION, email=body.email, keep_address=True
    ):
        return await handlers.register(
            uow,
            passwords,
            email=body.email,
            password=body.password,
            full_name=body.full_name,
            traceparent=current_traceparent(),
        )


@token_router.post("/auth/login")
async def login(
    body: LoginIn,
    request: Request,
    uow: Uow,
    passwords: PasswordsDep,
    tokens: TokensDep,
    attempts: AttemptsDep,
) -> TokensOut:
    with credential_attempt(attempts, request, email=body.email):
        pair = await handlers.login(
            uow, passwords, tokens, email=body.email, password=body.password
        )
    return TokensOut.of(pair)


@token_router.post("/auth/refresh")
async def refresh(
    body: RefreshIn, request: Request, uow: Uow, tokens: TokensDep, attempts: AttemptsDep
) -> TokensOut:
    """A new token pair for a refresh token, which is revoked; presenting a revoked one again
    revokes every token of the same login."""
    with credential_attempt(attempts, request, email=None):
        pair = await handlers.refresh(uow, tokens, refresh_token=body.refresh_token)
    return TokensOut.of(pair)


@contextlib.contextmanager
def _new_password_checked() -> Iterator[None]:
    """A new password the policy refuses, as the 422 a field validator would give."""
    try:
        yield
    except PasswordPolicyError as error:
        details = [{"loc": ["body", "new_password"], "message": str(error), "type": error.rule}]
        raise ApiError(422, "validation_error", "The request is not valid.", details) from None


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    user_id: OwnId, uow: Uow, tokens: TokensDep, body: Annotated[LogoutIn | None, Body()] = None
) -> Response:
    """End a session: the refresh token's family (this login and its rotations) is revoked, and
    its access tokens are refused everywhere within seconds; without a refresh token, every
    session of the caller. The same answer when there was nothing to revoke."""
    await handlers.logout(
        uow,
        tokens,
        user_id,
        refresh_token=body.refresh_token if body else None,
        traceparent=current_traceparent(),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@token_router.post("/auth/password")
async def change_password(
    body: PasswordChangeIn,
    user_id: OwnId,
    principal: CurrentUser,
    request: Request,
    uow: Uow,
    passwords: PasswordsDep,
    tokens: TokensDep,
    attempts: AttemptsDep,
) -> TokensOut:
    """Change the caller's password: the current one is needed (403 `invalid_current_password`
    otherwise), the new one must pass the policy. Every session and pending reset of the account
    is revoked; the answer is a new token pair, so the caller stays signed in."""
    with credential_attempt(attempts, request, email=principal.email), _new_password_checked():
        pair = await handlers.change_password(
            uow,
            passwords,
            tokens,
            user_id,
            current_password=body.current_password,
            new_password=body.new_password,
            traceparent=current_traceparent(),
        )
    return TokensOut.of(pair)


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED)
async def request_password_reset(
    body: PasswordResetIn,
    request: Request,
    uow: Uow,
    attempts: AttemptsDep,
    ttl: PasswordResetTtl,
    sealer: ResetTokenSealer,
) -> PasswordResetOut:
    """E-mail a single-use link to reset the password of the account with this address. The
    same answer whether or not there is one."""
    # Every request counts, for its address and the account it names: each may send an e-mail.
    with credential_attempt(
        attempts, request, kind=PASSWORD_RESET, email=body.email, keep_all=True
    ):
        await handlers.request_password_reset(
            uow, email=body.email, ttl=ttl, sealer=sealer, traceparent=current_traceparent()
        )
    return PasswordResetOut(message=PASSWORD_RESET_ANSWER)


@router.post("/auth/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
async def confirm_password_reset(
    body: PasswordResetConfirmIn,
    request: Request,
    uow: Uow,
    passwords: PasswordsDep,
    tokens: TokensDep,
    attempts: AttemptsDep,
) -> Response:
    """Set a new password with an e-mailed reset token (once). Every session of the account is
    revoked: log in with the new password."""
    attempt = credential_attempt(attempts, request, kind=PASSWORD_RESET, email=None)
    with attempt, _new_password_checked():
        await handlers.confirm_password_reset(
            uow,
            passwords,
            tokens,
            token=body.token,
            new_password=body.new_password,
            traceparent=current_traceparent(),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/jwks")
async def jwks(tokens: TokensDep) -> JSONResponse:
    """The public keys that verify this service's tokens (JWKS, RFC 7517)."""
    return JSONResponse(
        tokens.signing_key.jwks(),
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
    )


@router.get("/users/me")
async def get_me(user_id: OwnId, uow: Uow) -> UserView:
    return await queries.get_own_account(uow, user_id)


@router.patch("/users/me")
async def update_me(body: ProfileIn, user_id: OwnId, uow: Uow) -> UserView:
    return await handlers.update_profile(
        uow, user_id, body.changes(), traceparent=current_traceparent()
    )


@router.get("/users/me/notification-preferences")
async def get_notification_preferences(user_id: OwnId, uow: Uow) -> NotificationPreferencesView:
    return await queries.notification_preferences_of(uow, user_id)


@router.put("/users/me/notification-preferences")
async def put_notification_preferences(
    body: NotificationPreferencesIn, user_id: OwnId, uow: Uow
) -> NotificationPreferencesView:
    return await handlers.change_notification_preferences(
        uow, user_id, body.preferences, traceparent=current_traceparent()
    )


@router.get("/users")
async def list_users(
    admin: AdminUser,
    uow: Uow,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    q: Annotated[str | None, Query(max_length=200), _rule(domain.normalise_search)] = None,
) -> UserPage:
    """Accounts (deleted ones left out), newest first; `q` matches part of the e-mail address
    or the name."""
    return await queries.list_users(uow, limit=limit, cursor=cursor, q=q)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: str, admin: AdminUser, uow: Uow) -> Response:
    """Soft delete: the account can no longer log in or refresh, leaves the list, and its
    e-mail address stays taken."""
    try:
        target = str(uuid.UUID(user_id))
    except ValueError:
        raise UserNotFoundError(user_id) from None
    try:
        actor_id = str(uuid.UUID(admin.user_id))
    except ValueError:
        actor_id = admin.user_id
    await handlers.delete_user(uow, target, actor_id=actor_id, traceparent=current_traceparent())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
