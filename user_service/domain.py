"""Accounts' rules: e-mail addresses, the password policy, profile fields, roles, and what a
presented refresh token may do. Pure Python: no I/O, no framework.

The password policy is NIST SP 800-63B's (§5.1.1.2): length counted in code points after NFKC,
no composition rules, and refused when blank, common (the frequency list the `zxcvbn` package
ships), repetitive, or the account's own e-mail address or name.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

import phonenumbers
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from choreo.errors import ChoreoError

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 128
MIN_ADMIN_PASSWORD_LENGTH: Final = 12
MAX_EMAIL_LENGTH: Final = 254
MAX_FULL_NAME_LENGTH: Final = 200
# Fewer different characters than this is a repetition ("aaaaaaaa", "abababab"), not a password.
MIN_DISTINCT_PASSWORD_CHARACTERS: Final = 3
MAX_PHONE_LENGTH: Final = 32
MAX_ADDRESS_LENGTH: Final = 500

# One address, no spaces or control characters, a dot in the domain: what a mail server could
# deliver to; whether it does is for the welcome e-mail to find out.
_EMAIL: Final = re.compile(
    r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+"
)
# Characters that change how text around them is shown without showing themselves: the bidi
# embeddings, overrides, isolates and marks, and the zero-width ones. In a name they make it read
# other than it is (in an e-mail, or an admin's list); no name needs them.
_INVISIBLE: Final = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)
# A leading +, then digits with the usual separators: "+1 (202) 555-0143", "+49 30/1234567".
_PHONE: Final = re.compile(r"\+[0-9 ()./-]+")


class UserError(ChoreoError):
    """Root of the user service's domain errors."""


class InvalidInputError(UserError):
    """A field breaks a rule; the message names the rule and never repeats the value."""


class PasswordRule(StrEnum):
    """The password policy's rules, each named in the refusal of a password that breaks it."""

    LENGTH = "password_length"
    BLANK = "password_blank"
    REPETITIVE = "password_repetitive"
    COMMON = "password_common"
    PERSONAL = "password_personal"


class PasswordPolicyError(InvalidInputError):
    """A password the policy refuses: `rule` names the rule broken, the message says it in
    words; neither repeats the password."""

    def __init__(self, rule: PasswordRule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class EmailTakenError(UserError):
    def __init__(self) -> None:
        super().__init__("an account with this e-mail address already exists")


class InvalidCredentialsError(UserError):
    """Wrong e-mail or wrong password: one message for both, so neither is revealed."""

    def __init__(self) -> None:
        super().__init__("the e-mail address or the password is wrong")


class InvalidRefreshTokenError(UserError):
    def __init__(self) -> None:
        super().__init__("the refresh token is not valid; log in again")


class UserNotFoundError(UserError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user {user_id}")


class AccountClosedError(UserError):
    """A valid token whose account has been deleted since it was issued."""

    def __init__(self) -> None:
        super().__init__("this account no longer exists")


class CannotDeleteSelfError(UserError):
    def __init__(self) -> None:
        super().__init__("an admin cannot delete their own account")


class WrongCurrentPasswordError(UserError):
    """A password change whose current password is wrong: the caller is signed in, so this is
    a refusal of the change, not of the caller's token."""

    def __init__(self) -> None:
        super().__init__("the current password is wrong")


class InvalidResetTokenError(UserError):
    """A password-reset token that is unknown, expired, used or revoked: one message for all."""

    def __init__(self) -> None:
        super().__init__(
            "the password-reset link is not valid (it may have expired or been used); "
            "ask for a new one"
        )


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


def token_roles(role: Role) -> tuple[str, ...]:
    """The `roles` claim of an account's access tokens: every account is a `user` (the role the
    other services expect of a signed-in caller); admins are `admin` too."""
    return ("admin", "user") if role is Role.ADMIN else ("user",)


def _text(value: str, what: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as input errors."""
    if "\x00" in value:
        raise InvalidInputError(f"the {what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"the {what} must be valid Unicode text") from None
    return value


def normalise_email(raw: str) -> str:
    """The address as stored and compared: trimmed and lower-cased; InvalidInputError if it is
    not an address."""
    email = _text(raw, "e-mail address").strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidInputError("the e-mail address is not valid")
    return email


def normalise_password(password: str) -> str:
    """The password as hashed: Unicode NFKC, so that the same characters typed on different
    systems (composed or decomposed accents) make the same password."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("the password must be valid Unicode text") from None
    return unicodedata.normalize("NFKC", password)


def check_password_policy(
    password: str, *, email: str | None = None, full_name: str | None = None
) -> str:
    """The normalised password if the account with `email` and `full_name` may choose it;
    PasswordPolicyError naming the rule it breaks otherwise."""
    normalised = normalise_password(password)
    if not MIN_PASSWORD_LENGTH <= len(normalised) <= MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            PasswordRule.LENGTH,
            f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long",
        )
    if all(_is_blank(c) for c in normalised):
        raise PasswordPolicyError(
            PasswordRule.BLANK, "the password must not be only spaces or invisible characters"
        )
    folded = normalised.casefold()
    if len(set(folded)) < MIN_DISTINCT_PASSWORD_CHARACTERS:
        raise PasswordPolicyError(
            PasswordRule.REPETITIVE,
            f"the password must have at least {MIN_DISTINCT_PASSWORD_CHARACTERS} different "
            "characters",
        )
    if folded in _common_passwords():
        raise PasswordPolicyError(
            PasswordRule.COMMON,
            "the password is one of the most commonly used ones; choose another",
        )
    if _built_on(folded, _identifiers(email, full_name)):
        raise PasswordPolicyError(
            PasswordRule.PERSONAL,
            "the password must not be the account's e-mail address or name, alone or with only "
            "digits or symbols added",
        )
    return normalised


def _is_blank(character: str) -> bool:
    """Whitespace, and what shows nothing: controls and format characters (zero-width ones)."""
    return character.isspace() or unicodedata.category(character) in {"Cc", "Cf"}


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of the breach corpora zxcvbn ranks (lower-case)."""
    return frozenset(FREQUENCY_LISTS["passwords"])


def _compact(text: str) -> str:
    """Letters and digits only, case-folded: spaces and punctuation do not disguise a name."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


def _identifiers(email: str | None, full_name: str | None) -> list[str]:
    """What names the account, compacted, longest first: the address, its local part, the name."""
    names = [email, email.rpartition("@")[0] if email else None, full_name]
    return sorted({_compact(n) for n in names if n} - {""}, key=len, reverse=True)


def _built_on(folded_password: str, identifiers: Iterable[str]) -> bool:
    """Whether the password is one of `identifiers` with nothing but digits or symbols added."""
    rest = _compact(folded_password)
    found = False
    for identifier in identifiers:
        if identifier in rest:
            rest = rest.replace(identifier, "")
            found = True
    return found and not any(c.isalpha() for c in rest)


def admin_password_problem(
    password: str, *, email: str | None = None, dev_default: str, dev: bool
) -> str | None:
    """Why the seeded admin's password is refused, or None: the policy's reasons, and outside
    dev it must not be the printed default and must be at least MIN_ADMIN_PASSWORD_LENGTH
    characters."""
    try:
        normalised = check_password_policy(password, email=email)
    except InvalidInputError as error:
        return str(error)
    if dev:
        return None
    if password == dev_default:
        return "the dev default password is refused outside CHOREO_ENV=dev"
    if len(normalised) < MIN_ADMIN_PASSWORD_LENGTH:
        return f"it must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters long outside dev"
    return None


def normalise_full_name(raw: str) -> str:
    """The name as stored and shown: NFKC, trimmed, each run of whitespace one space; refused
    with control characters (line breaks, tabs), invisible or text-direction characters, or
    anything else that does not print."""
    name = unicodedata.normalize("NFKC", _text(raw, "full name"))
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInputError(
            "the full name must not contain control characters (line breaks, tabs)"
        )
    if any(c in _INVISIBLE for c in name):
        raise InvalidInputError(
            "the full name must not contain invisible or text-direction characters"
        )
    name = " ".join(name.split())
    if not name.isprintable():
        raise InvalidInputError("the full name must contain printable characters only")
    if not 1 <= len(name) <= MAX_FULL_NAME_LENGTH:
        raise InvalidInputError(f"the full name must be 1 to {MAX_FULL_NAME_LENGTH} characters")
    return name


def normalise_phone(raw: str | None) -> str | None:
    """A phone number in E.164 (`+442079460018`), or None for none; InvalidInputError when it is
    not a valid number written with its country code (a leading +, then digits and the usual
    separators: spaces, ( ) . / -). A number without its country code is refused rather than
    guessed: the same digits are another line in another country, and an SMS must reach this
    user's."""
    if raw is None:
        return None
    phone = _text(raw, "phone number").strip()
    if not phone:
        return None
    refusal = InvalidInputError(
        "the phone number must be a valid number with its country code, such as "
        f"+44 20 7946 0018 (a leading +, digits, optional spaces, ( ) . / -, at most "
        f"{MAX_PHONE_LENGTH} characters)"
    )
    if len(phone) > MAX_PHONE_LENGTH or not _PHONE.fullmatch(phone):
        raise refusal
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        raise refusal from None
    if not phonenumbers.is_valid_number(number):
        raise refusal
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_address(raw: str | None) -> str | None:
    """A postal address as free text (lines separated by newlines), or None for none."""
    if raw is None:
        return None
    address = _text(raw, "address").strip()
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidInputError(f"the address must be at most {MAX_ADDRESS_LENGTH} characters")
    return address or None


def normalise_search(raw: str) -> str | None:
    """Text to look for in accounts' e-mail addresses and names, or None for everything."""
    return _text(raw, "search text").strip() or None


@dataclass(frozen=True, slots=True)
class Profile:
    """The details a user edits about themselves."""

    full_name: str
    phone: str | None = None
    address: str | None = None


_PROFILE_RULES: Final[Mapping[str, Callable[[str], str | None]]] = {
    "full_name": normalise_full_name,
    "phone": normalise_phone,
    "address": normalise_address,
}


def change_profile(profile: Profile, changes: Mapping[str, str | None]) -> Profile | None:
    """The profile with `changes` applied (each value checked and normalised; None removes a
    phone number or an address), or None when they change nothing: then nothing is written and
    no UserUpdated is emitted."""
    unknown = set(changes) - set(_PROFILE_RULES)
    if unknown:
        raise InvalidInputError(f"not profile fields: {', '.join(sorted(unknown))}")
    normalised = {
        name: None if value is None else _PROFILE_RULES[name](value)
        for name, value in changes.items()
    }
    full_name = normalised.pop("full_name", profile.full_name)
    if full_name is None:
        raise InvalidInputError("the full name cannot be removed")
    updated = Profile(
        full_name=full_name,
        phone=normalised.get("phone", profile.phone),
        address=normalised.get("address", profile.address),
    )
    return None if updated == profile else updated


# Notification preferences: which channels each kind of notification goes by.


class NotificationKind(StrEnum):
    """The kinds of notification a user chooses channels for."""

    ORDER_UPDATES = "order_updates"  # received, confirmed, cancelled
    PAYMENT_UPDATES = "payment_updates"  # payment failed, refund issued
    ACCOUNT_NOTICES = "account_notices"  # welcome
    LOW_STOCK = "low_stock"  # to admins only


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    IN_APP = "in_app"


# What no preference changes: a password-reset link always goes by e-mail (and only there: it
# carries a secret). A change naming one of these is refused (NotSettableError), not ignored.
SECURITY_NOTICES: Final = ("security", "password_reset", "password_changed")
DEFAULT_CHANNELS: Final[Mapping[Channel, bool]] = {
    Channel.EMAIL: True,
    Channel.SMS: False,
    Channel.IN_APP: True,
}

Preferences = dict[NotificationKind, dict[Channel, bool]]


class NotSettableError(InvalidInputError):
    """A preference change tried to turn security notices off (or on another channel)."""


def default_preferences() -> Preferences:
    return {kind: dict(DEFAULT_CHANNELS) for kind in NotificationKind}


def stored_preferences(stored: Mapping[str, Mapping[str, bool]] | None) -> Preferences:
    """Preferences as stored (JSON), over the defaults: a kind or channel added since they were
    stored has its default."""
    preferences = default_preferences()
    for kind, channels in (stored or {}).items():
        if kind in NotificationKind.__members__.values():
            for channel, chosen in channels.items():
                if channel in Channel.__members__.values():
                    preferences[NotificationKind(kind)][Channel(channel)] = bool(chosen)
    return preferences


def change_preferences(
    current: Preferences, changes: Mapping[str, Mapping[str, bool]]
) -> Preferences | None:
    """`current` with `changes` applied (kinds and channels left out keep their value), or None
    when they change nothing. An unknown kind or channel is InvalidInputError; security notices
    are NotSettableError."""
    kinds = {kind.value for kind in NotificationKind}
    channels = {channel.value for channel in Channel}
    settable = [name for name in changes if name in SECURITY_NOTICES]
    if settable:
        raise NotSettableError(
            f"{', '.join(settable)}: security notices (a password reset or change) always go "
            "by e-mail and cannot be changed"
        )
    unknown_kinds = sorted(set(changes) - kinds)
    if unknown_kinds:
        raise InvalidInputError(
            f"unknown notification kind {_named(unknown_kinds)}: the kinds are "
            f"{', '.join(sorted(kinds))}"
        )
    updated = {kind: dict(chosen) for kind, chosen in current.items()}
    for kind, chosen in changes.items():
        unknown_channels = sorted(set(chosen) - channels)
        if unknown_channels:
            raise InvalidInputError(
                f"unknown channel {_named(unknown_channels)} of {kind}: the channels are "
                f"{', '.join(sorted(channels))}"
            )
        for channel, on in chosen.items():
            updated[NotificationKind(kind)][Channel(channel)] = on
    return None if updated == current else updated


def _named(names: Sequence[str], most: int = 5) -> str:
    """The first few of `names`, as sent (each cut to 64 characters), and how many more."""
    shown = ", ".join(name if len(name) <= 64 else name[:64] + "…" for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


class RefreshOutcome(StrEnum):
    """What a presented refresh token leads to."""

    ROTATE = "rotate"  # a new pair; the presented token is revoked
    UNKNOWN = "unknown"
    REUSED = "reused"  # revoked before, presented again: stolen or replayed; revoke its family
    EXPIRED = "expired"
    ACCOUNT_CLOSED = "account_closed"


class RevokeReason(StrEnum):
    ROTATED = "rotated"
    REUSE_DETECTED = "reuse_detected"
    ACCOUNT_DELETED = "account_deleted"
    LOGGED_OUT = "logged_out"
    PASSWORD_CHANGED = "password_changed"


class SessionEnd(StrEnum):
    """Why a session's access tokens were revoked (SessionsRevoked's `reason`)."""

    LOGGED_OUT = "logged_out"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    REUSE_DETECTED = "reuse_detected"


@dataclass(frozen=True, slots=True)
class StoredRefreshToken:
    """What the service holds about a refresh token it handed out."""

    expires_at: datetime
    revoked_at: datetime | None
    account_deleted: bool


def decide_refresh(token: StoredRefreshToken | None, now: datetime) -> RefreshOutcome:
    """Only a live token of a live account rotates; a revoked one is a reuse, whatever else."""
    if token is None:
        return RefreshOutcome.UNKNOWN
    if token.revoked_at is not None:
        return RefreshOutcome.REUSED
    if token.account_deleted:
        return RefreshOutcome.ACCOUNT_CLOSED
    if now >= token.expires_at:
        return RefreshOutcome.EXPIRED
    return RefreshOutcome.ROTATE


@dataclass(frozen=True, slots=True)
class StoredResetToken:
    """What the service holds about a password-reset token it e-mailed."""

    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    account_deleted: bool


def reset_token_usable(token: StoredResetToken | None, now: datetime) -> bool:
    """Only an unused, unrevoked, unexpired token of a live account sets a password."""
    return (
        token is not None
        and token.used_at is None
        and token.revoked_at is None
        and not token.account_deleted
        and now < token.expires_at
    )
