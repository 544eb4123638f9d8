"""`choreo up --log-format`: what the services it starts are told (`CHOREO_LOG_FORMAT`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from typer.testing import CliRunner

from choreo.cli import app
from choreo.stack.config import StackConfig
from choreo.stack.errors import StackError

runner = CliRunner()


class StackThatStopsAtOnce:
    """Stands in for the stack: keeps the configuration it was given, starts nothing."""

    configs: list[StackConfig] = []

    def __init__(self, config: StackConfig, output: Any) -> None:
        self.configs.append(config)
        self.supervisor = self

    def __enter__(self) -> None:
        raise StackError("not started by this test")

    def __exit__(self, *exc: object) -> None:
        pass

    def restart_counts(self) -> Mapping[str, int]:
        return {}


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[StackConfig]:
    StackThatStopsAtOnce.configs = []
    monkeypatch.setattr("choreo.cli.up.Stack", StackThatStopsAtOnce)
    for variable in ("CHOREO_LOG_FORMAT", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(variable, raising=False)
    return StackThatStopsAtOnce.configs


@pytest.mark.parametrize(
    ("arguments", "environment", "services_get"),
    [
        ([], {}, "json"),  # auto: this output is not a terminal
        ([], {"TTY_COMPATIBLE": "1"}, "text"),  # auto: it is one
        (["--log-format", "json"], {"TTY_COMPATIBLE": "1"}, "json"),
        (["--log-format", "text"], {}, "text"),
        ([], {"CHOREO_LOG_FORMAT": "text"}, "text"),
        (["--log-format", "auto"], {"CHOREO_LOG_FORMAT": "text"}, "json"),
    ],
)
def test_the_services_are_told_json_or_text(
    told: list[StackConfig],
    arguments: list[str],
    environment: dict[str, str],
    services_get: str,
) -> None:
    result = runner.invoke(app, ["up", *arguments], env=environment)

    assert "not started by this test" in result.output
    [config] = told
    assert config.environment["CHOREO_LOG_FORMAT"] == services_get


def test_an_unknown_format_is_a_usage_error(told: list[StackConfig]) -> None:
    result = runner.invoke(app, ["up", "--log-format", "xml"])

    assert result.exit_code == 2
    assert told == []
