"""What the notification service decides, as pure rules: which notifications exist, on which
channels each goes (the user's preferences), whether a delivery is sent, what SendGrid's and
Twilio's answers mean, and how codes read in words. No I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import phonenumbers

from choreo.errors import ChoreoError, NotReadyError, PermanentError, TransientError


class NotificationError(ChoreoError):
    """Root of the notification service's errors."""


class NotificationNotFoundError(NotificationError):
    """No notification of this user has that id."""


class NotKnownYetError(NotificationError, NotReadyError):
    """The contact or order a notification is about has not arrived yet (topics are consumed
    concurrently, so it may be a moment behind): try again a few times."""


class EmailUnavailableError(NotificationError, TransientError):
    """SendGrid did not take the e-mail, in a way that may pass (429, 5xx, no connection): an
    outage, waited out for as long as it lasts."""


class EmailRefusedError(NotificationError, PermanentError):
    """SendGrid refused the e-mail and always will as it is (a 4xx other than 429)."""


class SmsUnavailableError(NotificationError, TransientError):
    """Twilio did not take the SMS, in a way that may pass (429, 5xx, no connection)."""


class SmsRefusedError(NotificationError, PermanentError):
    """Twilio refused the SMS and always will as it is (a 4xx other than 429): dead-lettered,
    to be replayed once the cause is fixed."""


class ResetTokenUnreadableError(NotificationError, PermanentError):
    """A password-reset event whose token this service cannot use: sealed to another key, for
    another account or expiry, altered, sealed while this service holds no key, or missing.
    No link is sent; the record is dead-lettered (replay it once the key is right)."""


class Kind(StrEnum):
    """The notifications there are (DESIGN.md §4); each has a template of the same name."""

    WELCOME = "welcome"
    ORDER_RECEIVED = "order_received"
    ORDER_CONFIRMED = "order_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    PAYMENT_FAILED = "payment_failed"
    # The card asked for 3-D Secure: the customer must confirm the payment in the shop's app
    # (the client secret is on their order's view, never in a message).
    PAYMENT_ACTION_REQUIRED = "payment_action_required"
    REFUND_ISSUED = "refund_issued"
    LOW_STOCK = "low_stock"
    # E-mail only: its body holds a secret, so it is no in-app notification.
    PASSWORD_RESET = "password_reset"


ADMIN_ROLE = "admin"

# What a cancellation, once seen, makes untrue: "we are taking the payment and will write when
# the order is confirmed", and "your order is confirmed". Handled after the cancellation (topics
# are consumed concurrently; a dead letter is replayed later), they are not sent: the customer
# is never told "cancelled", then "confirmed". The other notifications stay true.
CONTRADICTED_BY_CANCELLATION = frozenset(
    {Kind.ORDER_RECEIVED, Kind.ORDER_CONFIRMED, Kind.PAYMENT_ACTION_REQUIRED}
)


@dataclass(frozen=True, slots=True)
class Contact:
    """What the service knows of a user from `user.event`; a deleted user keeps only the id."""

    user_id: str
    email: str | None
    full_name: str | None
    role: str | None
    deleted: bool
    phone: str | None = None

    @property
    def reachable(self) -> bool:
        return not self.deleted and bool(self.email)

    @property
    def display_name(self) -> str | None:
        """The name to put beside the address (`To: Ada <ada@...>`), or None."""
        return printable_name(self.full_name) or None

    @property
    def greeting_name(self) -> str:
        return printable_name(self.full_name) or "there"


# The longest name the user service accepts; a longer one stored before is cut to it.
MAX_NAME_LENGTH: Final = 200
# What the user service refuses in a name, besides controls: bidi controls and zero-width ones.
_INVISIBLE: Final = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)


def printable_name(raw: str | None) -> str:
    """A user's name as it may appear in a message: what the user service's rules allow
    (NFKC, printable characters, single spaces, at most MAX_NAME_LENGTH), obtained from any
    name, including one stored before those rules, by turning line breaks, tabs and other
    controls into spaces and dropping what does not print. Empty when nothing is left."""
    if not raw:
        return ""
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(
        " " if c.isspace() or unicodedata.category(c) == "Cc" else c
        for c in text
        if c not in _INVISIBLE
    )
    text = "".join(c for c in text if c == " " or c.isprintable())
    return " ".join(text.split())[:MAX_NAME_LENGTH].rstrip()


# Channels and preferences: which ways each notification goes.


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    IN_APP = "in_app"


class PreferenceKind(StrEnum):
    """The kinds a user chooses channels for (the user service's settable kinds)."""

    ORDER_UPDATES = "order_updates"
    PAYMENT_UPDATES = "payment_updates"
    ACCOUNT_NOTICES = "account_notices"
    LOW_STOCK = "low_stock"


# Each notification's kind of preference; a password reset has none: it is a security notice,
# always by e-mail and by nothing else (its body carries the reset token).
PREFERENCE_OF: Final[Mapping[Kind, PreferenceKind]] = {
    Kind.WELCOME: PreferenceKind.ACCOUNT_NOTICES,
    Kind.ORDER_RECEIVED: PreferenceKind.ORDER_UPDATES,
    Kind.ORDER_CONFIRMED: PreferenceKind.ORDER_UPDATES,
    Kind.ORDER_CANCELLED: PreferenceKind.ORDER_UPDATES,
    Kind.PAYMENT_FAILED: PreferenceKind.PAYMENT_UPDATES,
    Kind.PAYMENT_ACTION_REQUIRED: PreferenceKind.PAYMENT_UPDATES,
    Kind.REFUND_ISSUED: PreferenceKind.PAYMENT_UPDATES,
    Kind.LOW_STOCK: PreferenceKind.LOW_STOCK,
}
DEFAULT_CHANNELS: Final = frozenset({Channel.EMAIL, Channel.IN_APP})

ChosenChannels = Mapping[PreferenceKind, frozenset[Channel]]


def chosen_channels(preferences: Mapping[str, Mapping[str, bool]] | None) -> ChosenChannels:
    """A user's preferences (as the replica stores them: kind -> channel -> on) over the
    defaults: a kind or channel not in them has its default; unknown ones are ignored."""
    chosen = dict.fromkeys(PreferenceKind, DEFAULT_CHANNELS)
    for kind, channels in (preferences or {}).items():
        if kind not in PreferenceKind.__members__.values():
            continue
        current = set(chosen[PreferenceKind(kind)])
        for channel, on in channels.items():
            if channel in Channel.__members__.values():
                (current.add if on else current.discard)(Channel(channel))
        chosen[PreferenceKind(kind)] = frozenset(current)
    return chosen


def sms_number(phone: str | None) -> str | None:
    """The number an SMS goes to (E.164), or None when the user has none that is valid (the
    user service stores E.164; a number stored before it checked may be anything)."""
    if not phone:
        return None
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


NO_PHONE: Final = "no valid phone number in the user's profile"
NO_SMS: Final = "SMS is not set up here (no TWILIO_AUTH_TOKEN)"


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The channels one notification goes by, and why an SMS chosen does not go (or None)."""

    channels: frozenset[Channel]
    sms_skipped: str | None = None


def plan_channels(
    kind: Kind, chosen: ChosenChannels, *, phone: str | None, sms_available: bool = True
) -> ChannelPlan:
    """Where a notification of `kind` goes: the channels chosen for its kind of preference. An
    SMS chosen with no valid phone number (or where SMS is not set up) is skipped, and said so;
    when it was the only way chosen outside the app, the notice goes by e-mail instead, so that
    a user who asked to be told outside the app is. A password reset goes by e-mail, whatever
    is chosen."""
    preference = PREFERENCE_OF.get(kind)
    if preference is None:
        return ChannelPlan(frozenset({Channel.EMAIL}))
    channels = set(chosen.get(preference, DEFAULT_CHANNELS))
    if Channel.SMS not in channels:
        return ChannelPlan(frozenset(channels))
    if not sms_available:
        reason = NO_SMS
    elif sms_number(phone) is None:
        reason = NO_PHONE
    else:
        return ChannelPlan(frozenset(channels))
    channels.discard(Channel.SMS)
    if Channel.EMAIL in channels:
        return ChannelPlan(frozenset(channels), f"{reason}; sent by e-mail as chosen too")
    channels.add(Channel.EMAIL)
    return ChannelPlan(frozenset(channels), f"{reason}; sent by e-mail instead")


# Delivery of one message: at most once per (event, recipient, kind, channel). See deliveries.py.


class DeliveryStatus(StrEnum):
    CLAIMED = "claimed"  # committed before the send; still so afterwards: outcome unknown
    SENT = "sent"  # the provider accepted it
    FAILED = "failed"  # the provider refused it (or was unreachable): it was not sent
    SKIPPED = "skipped"  # never sent, on purpose (an SMS with no phone number): last_error says why


class Step(StrEnum):
    SEND = "send"  # no delivery yet: claim it and send
    SEND_AGAIN = "send_again"  # SendGrid refused it before: claim it again and send
    SKIP_SENT = "skip_sent"  # sent already
    SKIP_UNKNOWN = "skip_unknown"  # claimed, then no outcome recorded: it may have been sent


def next_step(status: DeliveryStatus | None) -> Step:
    """What to do with a delivery found in `status` (None: never claimed). A skipped one is
    tried again: the phone number may have been given since."""
    if status is None:
        return Step.SEND
    if status in (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED):
        return Step.SEND_AGAIN
    if status is DeliveryStatus.SENT:
        return Step.SKIP_SENT
    return Step.SKIP_UNKNOWN


class Outcome(StrEnum):
    """What became of one send, as the provider's answer (or its absence) tells."""

    ACCEPTED = "accepted"  # 2xx
    REFUSED_FOR_NOW = "refused_for_now"  # 429, 5xx, or no connection: not sent, may pass
    REFUSED = "refused"  # any other answer: not sent, never will be as it is
    NO_ANSWER = "no_answer"  # the request went out and no answer came back: unknown


def outcome_of_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.ACCEPTED
    if status == 429 or status >= 500:
        return Outcome.REFUSED_FOR_NOW
    return Outcome.REFUSED


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    detail: str  # what happened, for logs and the delivery row: never the message or the key
    message_id: str | None = None


def status_after(outcome: Outcome) -> DeliveryStatus:
    """The delivery's status once a send had `outcome`."""
    if outcome is Outcome.ACCEPTED:
        return DeliveryStatus.SENT
    if outcome is Outcome.NO_ANSWER:
        return DeliveryStatus.CLAIMED
    return DeliveryStatus.FAILED


# How codes read in words, for the customer.

_CANCEL_REASONS = {
    "OUT_OF_STOCK": "some of its items are out of stock",
    "PAYMENT_FAILED": "the payment did not go through",
    "TIMEOUT": "it could not be completed in time",
    "CUSTOMER_REQUEST": "you asked us to cancel it",
}

_DECLINE_REASONS = {
    "card_declined": "your card was declined",
    "insufficient_funds": "your card has insufficient funds",
    "expired_card": "your card has expired",
    "incorrect_cvc": "the card's security code is incorrect",
    "incorrect_number": "the card number is incorrect",
    "processing_error": "the card issuer could not process the payment",
    "authentication_required": (
        "your bank asked for an authentication (3-D Secure) that cannot be done for this payment"
    ),
    "no_payment_method": "there is no saved card on your account to charge",
    "payment_intent_canceled": "the payment was cancelled at the payment provider",
}


def cancel_reason_in_words(reason: str) -> str:
    """Why an order was cancelled, to follow "because"."""
    return _CANCEL_REASONS.get(reason, "it could not be completed")


def decline_reason_in_words(code: str, message: str) -> str:
    """Why a payment failed, to follow "because"; a code not known here falls back on the
    payment service's message, which is safe to show the customer."""
    if code in _DECLINE_REASONS:
        return _DECLINE_REASONS[code]
    text = message.strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "the payment provider refused the payment"


# Currencies whose minor unit is not a hundredth (ISO 4217).
_MINOR_UNIT_DIGITS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND"), 0
    ),
    **dict.fromkeys(("VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def format_money(amount: int, currency: str) -> str:
    """`2500, "USD"` -> `"25.00 USD"`: an amount in minor units, written out."""
    code = currency.upper()
    digits = _MINOR_UNIT_DIGITS.get(code, 2)
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**digits)
    written = f"{whole:,}" if digits == 0 else f"{whole:,}.{minor:0{digits}d}"
    return f"{sign}{written} {code}"


def order_reference(order_id: str) -> str:
    """A short reference to an order for subjects: `#` and the first 8 digits of its id."""
    return "#" + order_id.replace("-", "")[:8].upper()


def count_of(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
