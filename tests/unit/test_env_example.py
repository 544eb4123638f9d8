""".env.example names every environment variable a service's settings read, with its default.

A setting of the kit's own (`choreo.settings.ServiceSettings`) read with a service's prefix may
be listed once as `<SERVICE>_NAME`; a service that overrides its default lists it itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, TypeAdapter
from pydantic.fields import FieldInfo

from choreo.settings import ServiceSettings
from gateway_service.config import Settings as GatewaySettings
from inventory_service.config import Settings as InventorySettings
from notification_service.config import Settings as NotificationSettings
from order_service.config import Settings as OrderSettings
from payment_service.config import Settings as PaymentSettings
from user_service.config import Settings as UserSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
SETTINGS: tuple[type[ServiceSettings], ...] = (
    GatewaySettings,
    UserSettings,
    OrderSettings,
    PaymentSettings,
    InventorySettings,
    NotificationSettings,
)
TEMPLATE = "<SERVICE>_"

_LINE = re.compile(r"^# ((?:<SERVICE>_)?[A-Z][A-Z0-9_]*)=(.*)$")


def listed() -> dict[str, str]:
    """Each variable of .env.example, with the value its line gives."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    return {match[1]: match[2] for match in map(_LINE.match, lines) if match}


def variables(settings: type[ServiceSettings]) -> Iterator[tuple[str, str, FieldInfo]]:
    """(variable, field name, field) of every environment variable a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                assert isinstance(choice, str)
                yield choice, name, field
        elif isinstance(alias, str):
            yield alias, name, field
        else:
            yield f"{prefix}{name}".upper(), name, field


def _kit_default(settings: type[ServiceSettings], name: str, field: FieldInfo) -> bool:
    """Whether the field is the kit's, with the kit's default, read with the service's prefix."""
    kit = ServiceSettings.model_fields.get(name)
    return kit is not None and kit.validation_alias is None and kit.default == field.default


def _means_the_default(value: str, field: FieldInfo) -> bool:
    if value == "":
        return field.default in (None, "", [])
    assert field.annotation is not None
    parsed: Any = TypeAdapter(field.annotation).validate_strings(value)
    return bool(parsed == field.default)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda settings: settings.service)
def test_every_variable_has_a_line_with_its_default(settings: type[ServiceSettings]) -> None:
    lines = listed()
    prefix = str(settings.model_config.get("env_prefix", ""))
    missing, wrong = [], []
    for variable, name, field in variables(settings):
        if variable not in lines and _kit_default(settings, name, field):
            variable = TEMPLATE + variable.removeprefix(prefix)
        if variable not in lines:
            missing.append(variable)
        elif not _means_the_default(lines[variable], field):
            wrong.append(f"{variable}={lines[variable]} (default {field.default!r})")
    assert not missing, f".env.example has no line for {missing}"
    assert not wrong, f".env.example gives another default: {wrong}"


def test_every_line_is_read_by_some_service() -> None:
    read = {variable for settings in SETTINGS for variable, _, _ in variables(settings)}
    kit = {variable for variable, _, _ in variables(ServiceSettings)}
    stale = [
        variable
        for variable in listed()
        if variable not in read and variable.removeprefix(TEMPLATE).upper() not in kit
    ]
    assert not stale, f".env.example lists variables no service reads: {stale}"


def test_every_line_has_a_comment_above() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if _LINE.match(line):
            above = lines[number - 1]
            assert above.startswith("# "), f"no comment above {line}"
            assert not _LINE.match(above), f"no comment above {line}"
