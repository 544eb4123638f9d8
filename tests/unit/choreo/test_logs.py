"""Structured logs: JSON lines with service and request id, a human format, idempotent set-up."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from choreo.logs import configure_logging, request_id_var

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
NOISY = ("aiokafka", "uvicorn", "uvicorn.error", "uvicorn.access")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_root = root.handlers[:], root.level
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in NOISY
    }
    yield
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_json_line_has_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("payment_service", json=True)

    logging.getLogger("payment_service.stripe").warning("charge %s declined", "ch_1")

    [record] = json_lines(capsys)
    assert RFC3339_UTC.fullmatch(record["time"])
    assert record["level"] == "WARNING"
    assert record["logger"] == "payment_service.stripe"
    assert record["message"] == "charge ch_1 declined"
    assert record["service"] == "payment_service"
    assert "request_id" not in record


def test_json_line_carries_the_current_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", json=True)

    token = request_id_var.set("req-7")
    try:
        logging.getLogger("order_service").info("order placed")
    finally:
        request_id_var.reset(token)
    logging.getLogger("order_service").info("outside any request")

    inside, outside = json_lines(capsys)
    assert inside["request_id"] == "req-7"
    assert "request_id" not in outside


def test_exception_is_one_string_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", json=True)

    try:
        raise ValueError("bad state")
    except ValueError:
        logging.getLogger("order_service").exception("handler failed")

    [record] = json_lines(capsys)
    assert record["level"] == "ERROR"
    assert isinstance(record["exc_info"], str)
    assert "Traceback" in record["exc_info"]
    assert "ValueError: bad state" in record["exc_info"]


def test_uvicorn_colour_copy_of_the_message_is_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("order_service", json=True)

    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )

    [record] = json_lines(capsys)
    assert record["message"] == "Started server process [42]"
    assert "color_message" not in record


def test_extra_fields_are_kept_but_cannot_overwrite_core_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("order_service", json=True)

    logging.getLogger("order_service").info(
        "relayed", extra={"topic": "order.create", "count": 3, "level": "FAKE", "batch": object()}
    )

    [record] = json_lines(capsys)
    assert record["topic"] == "order.create"
    assert record["count"] == 3
    assert record["level"] == "INFO"
    assert record["batch"].startswith("<object object")  # not JSON-able: logged as its str()


def test_human_format_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", json=False)

    token = request_id_var.set("req-9")
    try:
        logging.getLogger("order_service.api").info("order %s placed", "o-1")
    finally:
        request_id_var.reset(token)

    [line] = capsys.readouterr().err.splitlines()
    assert "INFO" in line
    assert "order_service.api: order o-1 placed" in line
    assert "req-9" in line
    assert not line.startswith("{")


def test_default_is_json_unless_stderr_is_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("user_service")
    logging.getLogger("user_service").info("to a pipe")
    assert json_lines(capsys)[0]["message"] == "to a pipe"

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    configure_logging("user_service")
    logging.getLogger("user_service").info("to a person")
    assert "user_service: to a person" in terminal.getvalue()
    assert not terminal.getvalue().startswith("{")


def test_configuring_twice_logs_each_record_once(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", json=True)
    configure_logging("order_service", level="DEBUG", json=True)

    logging.getLogger("order_service").debug("once")

    assert [record["message"] for record in json_lines(capsys)] == ["once"]


def test_level_filters_records(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", level="warning", json=True)

    logging.getLogger("order_service").info("hidden")
    logging.getLogger("order_service").warning("shown")

    assert [record["message"] for record in json_lines(capsys)] == ["shown"]


def test_noisy_loggers_are_quiet_and_uvicorn_goes_through_the_root_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.error").propagate = False

    configure_logging("gateway_service", level="DEBUG", json=True)
    logging.getLogger("aiokafka.consumer").info("fetching")
    logging.getLogger("uvicorn.access").info("GET /healthz 200")
    logging.getLogger("uvicorn.error").info("Started server process")

    assert [record["message"] for record in json_lines(capsys)] == ["Started server process"]
