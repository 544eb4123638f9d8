"""Logs: JSON lines with service and request id, the short form a person reads, saga-step lines,
and an idempotent set-up."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from choreo.logs import (
    MESSAGE_WIDTH,
    LogFormat,
    collect_published,
    configure_logging,
    log_saga_step,
    note_published,
    request_id_var,
    resolve_log_format,
)
from choreo.testing.records import order_created

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
    configure_logging("payment_service", log_format=LogFormat.JSON)

    logging.getLogger("payment_service.stripe").warning("charge %s declined", "ch_1")

    [record] = json_lines(capsys)
    assert RFC3339_UTC.fullmatch(record["time"])
    assert record["level"] == "WARNING"
    assert record["logger"] == "payment_service.stripe"
    assert record["message"] == "charge ch_1 declined"
    assert record["service"] == "payment_service"
    assert "request_id" not in record


def test_json_line_carries_the_current_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", log_format=LogFormat.JSON)

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
    configure_logging("order_service", log_format=LogFormat.JSON)

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
    configure_logging("order_service", log_format=LogFormat.JSON)

    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://a", extra={"color_message": "on \x1b[1m%s\x1b[0m"}
    )

    [record] = json_lines(capsys)
    assert record["message"] == "Uvicorn running on http://a"
    assert "color_message" not in record


def test_extra_fields_are_kept_but_cannot_overwrite_core_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("order_service", log_format=LogFormat.JSON)

    logging.getLogger("order_service").info(
        "relayed", extra={"topic": "order.create", "count": 3, "level": "FAKE", "batch": object()}
    )

    [record] = json_lines(capsys)
    assert record["topic"] == "order.create"
    assert record["count"] == 3
    assert record["level"] == "INFO"
    assert record["batch"].startswith("<object object")  # not JSON-able: logged as its str()


ANSI = re.compile(r"\x1b\[[0-9;]*m")
CLOCK = r"\d\d:\d\d:\d\d"


def short_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The short form's lines as a terminal shows them, without the colours."""
    return [ANSI.sub("", line) for line in capsys.readouterr().err.splitlines()]


def test_short_form_is_the_time_and_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", log_format=LogFormat.TEXT)

    token = request_id_var.set("req-9")
    try:
        logging.getLogger("order_service.api").info(
            "order %s placed", "3fa2c1d0-58cc-4372-a567-0e02b2c3d479", extra={"total": 7800}
        )
    finally:
        request_id_var.reset(token)

    [line] = short_lines(capsys)
    assert re.fullmatch(rf"{CLOCK} order 3fa2c1d0… placed", line)  # no level, fields or ids


def test_short_form_saga_step_names_the_record_and_what_it_led_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("inventory_service", log_format=LogFormat.TEXT)
    event = order_created()
    consumer = logging.getLogger("choreo.consumer.records")

    published = collect_published()
    note_published(["StockReserved"])
    log_saga_step(consumer, event, "applied", published)
    log_saga_step(consumer, event, "applied", collect_published())
    log_saga_step(consumer, event, "duplicate", collect_published())  # DEBUG: not shown

    led_to, applied = short_lines(capsys)
    short_id = event.subject[:8]
    assert re.fullmatch(rf"{CLOCK} OrderCreated {short_id}… → StockReserved", led_to)
    assert re.fullmatch(rf"{CLOCK} OrderCreated {short_id}… applied", applied)


def test_saga_step_in_json_carries_the_whole_event(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("inventory_service", log_format=LogFormat.JSON)
    event = order_created()

    published = collect_published()
    note_published(["StockReserved", "StockReserved"])  # a commit tried twice
    log_saga_step(logging.getLogger("choreo.consumer.records"), event, "applied", published)

    [record] = json_lines(capsys)
    assert record["message"] == f"OrderCreated {event.subject} → StockReserved"
    assert record["event_id"] == event.id
    assert record["subject"] == event.subject
    assert record["published"] == ["StockReserved"]


def test_short_form_cuts_a_long_info_line_but_not_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("order_service", log_format=LogFormat.TEXT)
    long = "word " * 40

    logging.getLogger("order_service").info("%s", long)
    logging.getLogger("order_service").warning("%s", long)

    info, warning = short_lines(capsys)
    assert len(info) == len("00:00:00 ") + MESSAGE_WIDTH
    assert info.endswith("…")
    assert warning.endswith(f"WARNING order_service: {long.strip()}")


def test_short_form_shows_the_traceback_of_an_error_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("order_service", log_format=LogFormat.TEXT)
    log = logging.getLogger("choreo.web.probes")

    token = request_id_var.set("req-7")
    try:
        raise ValueError("bad state")
    except ValueError:
        log.warning("readiness check database failed", exc_info=True)
        log.exception("handler failed")
    finally:
        request_id_var.reset(token)

    warning, error, *traceback = short_lines(capsys)
    assert re.fullmatch(
        rf"{CLOCK} WARNING choreo.web.probes: readiness check database failed \[req req-7\]",
        warning,
    )
    assert re.fullmatch(rf"{CLOCK} ERROR choreo.web.probes: handler failed \[req req-7\]", error)
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: bad state"


def test_routine_start_up_lines_are_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", log_format=LogFormat.JSON)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("alembic.runtime.migration").info("Context impl %s.", "PostgresqlImpl")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8002")
    assert [record["message"] for record in json_lines(capsys)] == [
        "Uvicorn running on http://127.0.0.1:8002"
    ]

    configure_logging("order_service", level="DEBUG", log_format=LogFormat.JSON)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    assert [record["level"] for record in json_lines(capsys)] == ["DEBUG"]


@pytest.mark.parametrize(
    ("choice", "is_terminal", "chosen"),
    [
        (LogFormat.AUTO, True, LogFormat.TEXT),
        (LogFormat.AUTO, False, LogFormat.JSON),
        (LogFormat.JSON, True, LogFormat.JSON),
        (LogFormat.TEXT, False, LogFormat.TEXT),
    ],
)
def test_auto_is_text_on_a_terminal_only(
    choice: LogFormat, is_terminal: bool, chosen: LogFormat
) -> None:
    assert resolve_log_format(choice, is_terminal) is chosen


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
    assert re.fullmatch(rf"{CLOCK} to a person\n", ANSI.sub("", terminal.getvalue()))


def test_configuring_twice_logs_each_record_once(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", log_format=LogFormat.JSON)
    configure_logging("order_service", level="DEBUG", log_format=LogFormat.JSON)

    logging.getLogger("order_service").debug("once")

    assert [record["message"] for record in json_lines(capsys)] == ["once"]


def test_level_filters_records(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("order_service", level="warning", log_format=LogFormat.JSON)

    logging.getLogger("order_service").info("hidden")
    logging.getLogger("order_service").warning("shown")

    assert [record["message"] for record in json_lines(capsys)] == ["shown"]


def test_noisy_loggers_are_quiet_and_uvicorn_goes_through_the_root_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.error").propagate = False

    configure_logging("gateway_service", level="DEBUG", log_format=LogFormat.JSON)
    logging.getLogger("aiokafka.consumer").info("fetching")
    logging.getLogger("uvicorn.access").info("GET /healthz 200")
    logging.getLogger("uvicorn.error").info("Started server process")

    assert [record["message"] for record in json_lines(capsys)] == ["Started server process"]
