"""The API's own rules, without a server: registration checks the password against the address
and the name and names the rule it breaks, and every route answering with tokens is one whose
answers no cache keeps."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from user_service.api import RegisterIn, router, token_router


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as refused:
        RegisterIn.model_validate(body)
    [error] = refused.value.errors()
    return {"loc": error["loc"], "type": error["type"], "msg": error["msg"]}


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("12345678", "password_common"),
        ("password", "password_common"),
        (" " * 8, "password_blank"),
        ("\u00a0" * 8, "password_blank"),
        ("ada@example.com", "password_personal"),
        ("ada12345", "password_personal"),
        ("Ada Lovelace!", "password_personal"),
        ("short", "password_length"),
    ],
)
def test_a_refused_password_names_the_rule_and_is_not_repeated(password: str, rule: str) -> None:
    error = refusal({"email": "ada@example.com", "password": password, "full_name": "Ada Lovelace"})
    assert error["loc"] == ("password",)
    assert error["type"] == rule
    if password.strip() and password != "password":
        assert password not in error["msg"]


def test_registration_normalises_the_name_and_keeps_a_good_password() -> None:
    body = RegisterIn.model_validate(
        {"email": " Ada@Example.com", "password": "correct horse", "full_name": " Ada\u00a0 L. "}
    )
    assert (body.email, body.full_name, body.password) == (
        "ada@example.com",
        "Ada L.",
        "correct horse",
    )


def test_a_name_with_line_breaks_is_refused() -> None:
    error = refusal(
        {
            "email": "ada@example.com",
            "password": "correct horse",
            "full_name": "Account locked, verify at http://evil.example\r\nBcc: x@evil.example",
        }
    )
    assert error["loc"] == ("full_name",)
    assert "control characters" in error["msg"]


def _answers_with_tokens(route: APIRoute) -> bool:
    model = route.response_model
    return (
        isinstance(model, type)
        and issubclass(model, BaseModel)
        and bool({"access_token", "refresh_token"} & set(model.model_fields))
    )


def test_every_route_answering_with_tokens_is_never_cached() -> None:
    routes = [r for r in [*router.routes, *token_router.routes] if isinstance(r, APIRoute)]
    with_tokens = {route.path for route in routes if _answers_with_tokens(route)}
    assert with_tokens == {"/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/password"}
    on_token_router = {r.path for r in token_router.routes if isinstance(r, APIRoute)}
    assert with_tokens <= on_token_router
