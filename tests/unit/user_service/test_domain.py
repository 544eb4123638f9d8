"""Account rules without I/O: addresses, the password policy, profile fields, roles, and what a
presented refresh token may do."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from user_service.domain import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    InvalidInputError,
    Profile,
    RefreshOutcome,
    Role,
    StoredRefreshToken,
    admin_password_problem,
    change_profile,
    check_password_policy,
    decide_refresh,
    normalise_address,
    normalise_email,
    normalise_full_name,
    normalise_password,
    normalise_phone,
    normalise_search,
    token_roles,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM \n", "ada.lovelace@example.com"),
        ("o'brien+shop@mail.example.co.uk", "o'brien+shop@mail.example.co.uk"),
        ("Ünïcode@Exämple.de", "ünïcode@exämple.de"),
    ],
)
def test_addresses_are_trimmed_and_lower_cased(raw: str, stored: str) -> None:
    assert normalise_email(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        "ada@example..com",
        "ada@.example.com",
        "ada\x00@example.com",
        "ada\ud800@example.com",
        "a" * 65 + "@example.com",
        "ada@" + "e" * 250 + ".com",
    ],
)
def test_what_is_not_an_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="e-mail address"):
        normalise_email(raw)


@pytest.mark.parametrize("length", [MIN_PASSWORD_LENGTH, 20, MAX_PASSWORD_LENGTH])
def test_passwords_of_8_to_128_characters_may_be_chosen(length: int) -> None:
    password = ("pässwörd" * 20)[:length]
    assert check_password_policy(password) == password


@pytest.mark.parametrize("length", [0, 1, MIN_PASSWORD_LENGTH - 1, MAX_PASSWORD_LENGTH + 1, 10_000])
def test_shorter_or_longer_passwords_are_refused_without_being_repeated(length: int) -> None:
    password = ("Secret!" * 2000)[:length]
    with pytest.raises(InvalidInputError, match="8 to 128 characters") as refused:
        check_password_policy(password)
    if password:
        assert password not in str(refused.value)


def test_a_password_is_the_same_however_its_accents_were_typed() -> None:
    composed = unicodedata.normalize("NFC", "crème brûlée")
    decomposed = unicodedata.normalize("NFD", "crème brûlée")
    assert composed != decomposed
    assert check_password_policy(composed) == check_password_policy(decomposed)
    assert normalise_password(decomposed) == normalise_password(composed)
    # Length counts characters as normalised: 7 composed letters are too few however typed.
    with pytest.raises(InvalidInputError):
        check_password_policy(unicodedata.normalize("NFD", "éééé123"))


def test_a_password_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="valid Unicode"):
        check_password_policy("password\ud800x")


@given(st.text(min_size=MIN_PASSWORD_LENGTH, max_size=MAX_PASSWORD_LENGTH))
def test_normalising_twice_changes_nothing(password: str) -> None:
    try:
        once = normalise_password(password)
    except InvalidInputError:
        return
    assert normalise_password(once) == once


def test_the_admin_password_is_refused_outside_dev_when_it_is_the_default_or_short() -> None:
    default = "choreo-admin"
    assert admin_password_problem(default, dev_default=default, dev=True) is None
    problem = admin_password_problem(default, dev_default=default, dev=False)
    assert problem is not None
    assert "dev default" in problem
    short = admin_password_problem("elevenchars", dev_default=default, dev=False)
    assert short is not None
    assert "at least 12" in short
    assert admin_password_problem("elevenchars", dev_default=default, dev=True) is None
    assert admin_password_problem("twelve-chars", dev_default=default, dev=False) is None
    assert admin_password_problem("short", dev_default=default, dev=True) is not None


def test_full_names_are_trimmed_and_bounded() -> None:
    assert normalise_full_name("  Ada Lovelace ") == "Ada Lovelace"
    assert normalise_full_name("x" * 200) == "x" * 200
    for bad in ("", "   ", "x" * 201, "Ada\x00"):
        with pytest.raises(InvalidInputError, match="full name"):
            normalise_full_name(bad)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("+1 (555) 010-9999", "+1 (555) 010-9999"),
        (" 030/1234567 ", "030/1234567"),
        ("+44.20.7946.0018", "+44.20.7946.0018"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_phone_numbers_are_digits_with_the_usual_separators(
    raw: str | None, stored: str | None
) -> None:
    assert normalise_phone(raw) == stored


@pytest.mark.parametrize(
    "raw",
    ["123", "call me", "+1 555 CALL NOW", "1+555", "1" * 21, "+1-" + "5-" * 15 + "5", "555\x00"],
)
def test_other_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="phone number"):
        normalise_phone(raw)


def test_addresses_are_free_text_of_at_most_500_characters() -> None:
    assert normalise_address(" 12 Analytical Row\nLondon ") == "12 Analytical Row\nLondon"
    assert normalise_address("") is None
    assert normalise_address(None) is None
    assert normalise_address("x" * 500) == "x" * 500
    with pytest.raises(InvalidInputError, match="at most 500"):
        normalise_address("x" * 501)


def test_search_text_is_trimmed_and_blank_means_everything() -> None:
    assert normalise_search("  ada ") == "ada"
    assert normalise_search("   ") is None
    with pytest.raises(InvalidInputError):
        normalise_search("a\x00")


def test_a_profile_change_applies_checked_values_and_says_when_nothing_changed() -> None:
    profile = Profile("Ada Lovelace", phone="+44 20 7946 0018", address=None)
    assert change_profile(profile, {}) is None
    assert change_profile(profile, {"full_name": " Ada Lovelace "}) is None
    assert change_profile(profile, {"address": " 12 Analytical Row "}) == Profile(
        "Ada Lovelace", phone="+44 20 7946 0018", address="12 Analytical Row"
    )
    assert change_profile(profile, {"phone": None}) == Profile("Ada Lovelace")
    assert change_profile(profile, {"phone": ""}) == Profile("Ada Lovelace")
    with pytest.raises(InvalidInputError, match="cannot be removed"):
        change_profile(profile, {"full_name": None})
    with pytest.raises(InvalidInputError, match="phone number"):
        change_profile(profile, {"phone": "call me"})
    with pytest.raises(InvalidInputError, match="not profile fields: email"):
        change_profile(profile, {"email": "x@example.com"})


def test_every_account_is_a_user_and_admins_are_admins_too() -> None:
    assert token_roles(Role.CUSTOMER) == ("user",)
    assert set(token_roles(Role.ADMIN)) == {"admin", "user"}


def _token(
    *, expires_in: timedelta = timedelta(days=1), revoked: bool = False, deleted: bool = False
) -> StoredRefreshToken:
    return StoredRefreshToken(
        expires_at=NOW + expires_in,
        revoked_at=NOW - timedelta(minutes=1) if revoked else None,
        account_deleted=deleted,
    )


@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        (None, RefreshOutcome.UNKNOWN),
        (_token(), RefreshOutcome.ROTATE),
        (_token(expires_in=timedelta(seconds=1)), RefreshOutcome.ROTATE),
        (_token(expires_in=timedelta(0)), RefreshOutcome.EXPIRED),
        (_token(expires_in=-timedelta(days=1)), RefreshOutcome.EXPIRED),
        (_token(deleted=True), RefreshOutcome.ACCOUNT_CLOSED),
        (_token(revoked=True), RefreshOutcome.REUSED),
        # A revoked token is a reuse whatever else is true of it: its family must go.
        (_token(revoked=True, expires_in=-timedelta(days=1)), RefreshOutcome.REUSED),
        (_token(revoked=True, deleted=True), RefreshOutcome.REUSED),
    ],
)
def test_only_a_live_token_of_a_live_account_rotates(
    token: StoredRefreshToken | None, outcome: RefreshOutcome
) -> None:
    assert decide_refresh(token, NOW) is outcome
