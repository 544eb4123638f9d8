"""Account rules without I/O: addresses, the password policy, profile fields, roles, and what a
presented refresh token may do."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from user_service.domain import (
    MAX_FULL_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    InvalidInputError,
    PasswordPolicyError,
    PasswordRule,
    Profile,
    RefreshOutcome,
    Role,
    StoredRefreshToken,
    StoredResetToken,
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
    reset_token_usable,
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


# Accepted before issue 13's review (NIST SP 800-63B §5.1.1.2 refuses each).
@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("12345678", PasswordRule.COMMON),
        ("password", PasswordRule.COMMON),
        ("PassWord", PasswordRule.COMMON),
        ("iloveyou", PasswordRule.COMMON),
        (" " * 8, PasswordRule.BLANK),
        ("\u00a0" * 8, PasswordRule.BLANK),  # non-breaking spaces: NFKC makes them spaces
        ("\u3000" * 8, PasswordRule.BLANK),  # ideographic spaces
        ("\u200b" * 8, PasswordRule.BLANK),  # zero-width spaces show nothing either
        (" \t \n \u2028 \r", PasswordRule.BLANK),
        ("aaaaaaaa", PasswordRule.REPETITIVE),
        ("abababab", PasswordRule.REPETITIVE),
        ("ada.lovelace@example.com", PasswordRule.PERSONAL),
    ],
)
def test_common_blank_repetitive_and_personal_passwords_are_refused_by_name(
    password: str, rule: PasswordRule
) -> None:
    with pytest.raises(PasswordPolicyError) as refused:
        check_password_policy(password, email="ada.lovelace@example.com", full_name="Ada")
    assert refused.value.rule is rule
    if password.strip() and password != "password":  # the word is in every message
        assert password not in str(refused.value)


@pytest.mark.parametrize(
    "password",
    [
        "ada.lovelace@example.com",
        "ADA.Lovelace@Example.com",
        "ada.lovelace@example.com1",
        "ada.lovelace",
        "Ada.Lovelace2024!",
        "adalovelace",
        "Ada Lovelace",
        "ada lovelace 1815",
        "AdaLovelace!!",
        "ada_lovelace_42",
        "2024 ada lovelace",
        "\uff61ada lovelace!1",  # NFKC folds the full-width full stop
    ],
)
def test_a_password_built_on_the_address_or_the_name_is_refused(password: str) -> None:
    with pytest.raises(PasswordPolicyError) as refused:
        check_password_policy(password, email="ada.lovelace@example.com", full_name="Ada  Lovelace")
    assert refused.value.rule is PasswordRule.PERSONAL


@pytest.mark.parametrize(
    ("password", "email", "full_name"),
    [
        ("eves-password", "eve@example.com", "Eve"),  # more than the name and digits
        ("choreo-admin", "admin@example.com", None),  # the stack's dev admin
        ("ada lovelace rocks", "ada@example.com", "Ada Lovelace"),
        ("correct horse", "ada@example.com", "Ada Lovelace"),
        ("83749201", "ada@example.com", "Ada Lovelace"),  # no name in it at all
        ("日本語のパスワード", "taro@example.jp", "山田太郎"),  # 9 code points, 27 bytes
    ],
)
def test_passwords_merely_sharing_letters_with_the_account_may_be_chosen(
    password: str, email: str, full_name: str | None
) -> None:
    assert check_password_policy(password, email=email, full_name=full_name) == password


def test_length_counts_code_points_after_nfkc_not_bytes() -> None:
    # Seven emoji are 28 bytes in UTF-8, and still seven characters.
    with pytest.raises(PasswordPolicyError) as refused:
        check_password_policy("🐎🔋🧷📎🐴🔌🪫")
    assert refused.value.rule is PasswordRule.LENGTH
    # NFKC expands the ligature: "ﬁ" + 6 letters is 8 characters once normalised.
    assert check_password_policy("\ufb01refly7") == "firefly7"


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
    # The policy applies to the admin's too, with the admin's address.
    assert admin_password_problem("password", dev_default=default, dev=True) is not None
    personal = admin_password_problem(
        "root@example.com2024", email="root@example.com", dev_default=default, dev=True
    )
    assert personal is not None
    assert "e-mail address or name" in personal
    assert (
        admin_password_problem(default, email="admin@example.com", dev_default=default, dev=True)
        is None
    )


def test_full_names_are_trimmed_and_bounded() -> None:
    assert normalise_full_name("  Ada Lovelace ") == "Ada Lovelace"
    assert normalise_full_name("x" * 200) == "x" * 200
    for bad in ("", "   ", "x" * 201, "Ada\x00"):
        with pytest.raises(InvalidInputError, match="full name"):
            normalise_full_name(bad)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Ada   Lovelace", "Ada Lovelace"),
        ("Ada\u00a0Lovelace", "Ada Lovelace"),  # NFKC: a no-break space is a space
        ("Ada\u3000\u2003Lovelace", "Ada Lovelace"),
        # Full-width letters.
        ("\uff2d\uff41\uff52\uff49\uff45 \uff23\uff55\uff52\uff49\uff45", "Marie Curie"),
        ("Zoë  O'Brien-Smith", "Zoë O'Brien-Smith"),
        ("Sofia Kovalevskaya \u2028", "Sofia Kovalevskaya"),
        ("محمد بن موسى الخوارزمي", "محمد بن موسى الخوارزمي"),
        # Length counts the name as stored: the collapsed run fits the bound.
        ("x" * (MAX_FULL_NAME_LENGTH - 2) + "    y", "x" * (MAX_FULL_NAME_LENGTH - 2) + " y"),
    ],
)
def test_full_names_are_normalised(raw: str, stored: str) -> None:
    assert normalise_full_name(raw) == stored


@pytest.mark.parametrize(
    "name",
    [
        # Accepted before issue 13's review: it went into the welcome e-mail's subject and, with
        # its CR/LF, into the recipient's display name.
        "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example",
        "Ada\nLovelace",
        "Ada\rLovelace",
        "Ada\tLovelace",
        "Ada\x1bLovelace",
        "Ada\x7fLovelace",
        "Ada\x85Lovelace",  # NEL, a C1 control
        *(
            f"Ada{invisible}Lovelace"
            for invisible in (
                "\u202a\u202b\u202c\u202d\u202e"  # bidi embeddings and overrides
                "\u2066\u2067\u2068\u2069"  # bidi isolates
                "\u200e\u200f\u061c"  # bidi marks
                "\u200b\u200c\u200d\u2060\ufeff"  # zero-width
            )
        ),
        "Ada\u00adLovelace",  # a soft hyphen prints nothing
        "Ada\ue000",  # private use
    ],
)
def test_names_with_control_invisible_or_unprintable_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="full name") as refused:
        normalise_full_name(name)
    assert "evil" not in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("+1 (202) 555-0143", "+12025550143"),
        (" +49 30/1234567 ", "+49301234567"),
        ("+44.20.7946.0018", "+442079460018"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_phone_numbers_are_stored_in_e164(raw: str | None, stored: str | None) -> None:
    assert normalise_phone(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "123",
        "call me",
        "+1 555 CALL NOW",
        "1+555",
        "1" * 21,
        "+1-" + "5-" * 15 + "5",
        "555\x00",
        "020 7946 0018",  # no country code: another line in another country
        "+1 555 010 9999",  # no such number (555-01xx is fiction's)
        "+999 1234",
    ],
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
    profile = Profile("Ada Lovelace", phone="+442079460018", address=None)
    assert change_profile(profile, {}) is None
    assert change_profile(profile, {"full_name": " Ada Lovelace "}) is None
    assert change_profile(profile, {"address": " 12 Analytical Row "}) == Profile(
        "Ada Lovelace", phone="+442079460018", address="12 Analytical Row"
    )
    assert change_profile(profile, {"phone": "+44 20 7946 0018"}) is None
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


_AGO = NOW - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("token", "usable"),
    [
        (None, False),
        (StoredResetToken(NOW + timedelta(minutes=30), None, None, False), True),
        (StoredResetToken(NOW + timedelta(seconds=1), None, None, False), True),
        (StoredResetToken(NOW, None, None, False), False),  # expired at its expiry
        (StoredResetToken(NOW + timedelta(minutes=30), _AGO, None, False), False),  # used
        (StoredResetToken(NOW + timedelta(minutes=30), None, _AGO, False), False),  # revoked
        (StoredResetToken(NOW + timedelta(minutes=30), None, None, True), False),  # deleted
    ],
)
def test_only_an_unused_unexpired_reset_token_of_a_live_account_sets_a_password(
    token: StoredResetToken | None, usable: bool
) -> None:
    assert reset_token_usable(token, NOW) is usable
