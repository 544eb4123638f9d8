"""Which channels a notification goes by: the preferences over the defaults, a password reset
by e-mail whatever is chosen, and an SMS chosen with no phone number."""

from __future__ import annotations

from notification_service.domain import (
    DEFAULT_CHANNELS,
    Channel,
    DeliveryStatus,
    Kind,
    PreferenceKind,
    Step,
    chosen_channels,
    next_step,
    plan_channels,
    sms_number,
)

PHONE = "+12025550143"
SMS_ONLY = {"order_updates": {"email": False, "sms": True, "in_app": False}}


def test_nothing_chosen_is_email_and_in_app_for_every_kind() -> None:
    assert chosen_channels(None) == dict.fromkeys(PreferenceKind, DEFAULT_CHANNELS)
    plan = plan_channels(Kind.ORDER_CONFIRMED, chosen_channels(None), phone=PHONE)
    assert plan.channels == {Channel.EMAIL, Channel.IN_APP}
    assert plan.sms_skipped is None


def test_each_kind_follows_its_own_preference() -> None:
    chosen = chosen_channels(SMS_ONLY)
    assert plan_channels(Kind.ORDER_CONFIRMED, chosen, phone=PHONE).channels == {Channel.SMS}
    assert plan_channels(Kind.ORDER_CANCELLED, chosen, phone=PHONE).channels == {Channel.SMS}
    assert plan_channels(Kind.REFUND_ISSUED, chosen, phone=PHONE).channels == DEFAULT_CHANNELS
    assert plan_channels(Kind.WELCOME, chosen, phone=PHONE).channels == DEFAULT_CHANNELS


def test_a_password_reset_goes_by_email_whatever_is_chosen() -> None:
    chosen = chosen_channels(
        {kind.value: {"email": False, "sms": True, "in_app": True} for kind in PreferenceKind}
    )
    assert plan_channels(Kind.PASSWORD_RESET, chosen, phone=PHONE).channels == {Channel.EMAIL}


def test_sms_without_a_phone_number_falls_back_to_email_and_says_why() -> None:
    plan = plan_channels(Kind.ORDER_CONFIRMED, chosen_channels(SMS_ONLY), phone=None)
    assert plan.channels == {Channel.EMAIL}
    assert plan.sms_skipped is not None
    assert "sent by e-mail instead" in plan.sms_skipped
    with_email = chosen_channels({"order_updates": {"sms": True}})
    plan = plan_channels(Kind.ORDER_CONFIRMED, with_email, phone="not a number")
    assert plan.channels == {Channel.EMAIL, Channel.IN_APP}
    assert plan.sms_skipped is not None
    assert "as chosen too" in plan.sms_skipped
    unset_up = plan_channels(
        Kind.ORDER_CONFIRMED, chosen_channels(SMS_ONLY), phone=PHONE, sms_available=False
    )
    assert unset_up.channels == {Channel.EMAIL}
    assert unset_up.sms_skipped is not None
    assert "not set up" in unset_up.sms_skipped


def test_everything_off_is_nothing() -> None:
    off = chosen_channels({"order_updates": {"email": False, "sms": False, "in_app": False}})
    assert plan_channels(Kind.ORDER_CONFIRMED, off, phone=PHONE).channels == frozenset()


def test_unknown_kinds_and_channels_are_ignored() -> None:
    chosen = chosen_channels({"newsletters": {"email": False}, "low_stock": {"pigeon": True}})
    assert chosen == dict.fromkeys(PreferenceKind, DEFAULT_CHANNELS)


def test_sms_numbers_are_e164_or_none() -> None:
    assert sms_number("+1 (202) 555-0143") == PHONE
    assert sms_number(PHONE) == PHONE
    assert sms_number("202 555 0143") is None  # no country code: no guess
    assert sms_number("+1 555 010 9999") is None
    assert sms_number(None) is None


def test_a_skipped_sms_is_tried_again_on_redelivery() -> None:
    assert next_step(DeliveryStatus.SKIPPED) is Step.SEND_AGAIN
