"""The user service's rules of notification preferences: defaults, changes, refusals."""

from __future__ import annotations

import pytest

from user_service.domain import (
    Channel,
    InvalidInputError,
    NotificationKind,
    NotSettableError,
    change_preferences,
    default_preferences,
    stored_preferences,
)


def test_every_kind_defaults_to_email_and_in_app_without_sms() -> None:
    defaults = default_preferences()
    assert set(defaults) == set(NotificationKind)
    for channels in defaults.values():
        assert channels == {Channel.EMAIL: True, Channel.SMS: False, Channel.IN_APP: True}


def test_a_change_sets_the_channels_it_names_and_keeps_the_others() -> None:
    changed = change_preferences(
        default_preferences(), {"order_updates": {"email": False, "sms": True}}
    )
    assert changed is not None
    assert changed[NotificationKind.ORDER_UPDATES] == {
        Channel.EMAIL: False,
        Channel.SMS: True,
        Channel.IN_APP: True,
    }
    assert (
        changed[NotificationKind.PAYMENT_UPDATES]
        == default_preferences()[NotificationKind.PAYMENT_UPDATES]
    )


def test_a_change_to_what_is_already_chosen_is_no_change() -> None:
    assert change_preferences(default_preferences(), {}) is None
    assert change_preferences(default_preferences(), {"low_stock": {"email": True}}) is None


@pytest.mark.parametrize("notice", ["security", "password_reset", "password_changed"])
def test_security_notices_cannot_be_turned_off(notice: str) -> None:
    with pytest.raises(NotSettableError, match="cannot be changed"):
        change_preferences(default_preferences(), {notice: {"email": False}})


def test_unknown_kinds_and_channels_are_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="unknown notification kind newsletters"):
        change_preferences(default_preferences(), {"newsletters": {"email": True}})
    with pytest.raises(InvalidInputError, match="unknown channel fax of order_updates"):
        change_preferences(default_preferences(), {"order_updates": {"fax": True}})


def test_stored_preferences_lie_over_the_defaults_and_unknown_entries_are_ignored() -> None:
    stored = stored_preferences(
        {"order_updates": {"sms": True, "pigeon": True}, "retired_kind": {"email": False}}
    )
    assert stored[NotificationKind.ORDER_UPDATES][Channel.SMS] is True
    assert stored[NotificationKind.ORDER_UPDATES][Channel.EMAIL] is True
    assert stored_preferences(None) == default_preferences()


def test_a_flood_of_unknown_kinds_is_named_in_short() -> None:
    flood = {f"kind{n:05}": {"email": True} for n in range(20_000)}
    flood["x" * 900_000] = {"email": True}
    with pytest.raises(InvalidInputError) as refused:
        change_preferences(default_preferences(), flood)
    message = str(refused.value)
    assert "kind00000, kind00001" in message
    assert "and 19996 more" in message
    assert len(message) < 500
