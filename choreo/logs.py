"""Logging: JSON lines for machines, or short coloured lines for a person (`LogFormat`).

Every record carries the service name and, inside an HTTP request, the request id, so a line in
any service's log can be matched with the response the client saw (`X-Request-ID`). A request
and a saga step each log one line at INFO that also names the records they published.
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    from choreo.events import Event
    from choreo.records import Record

# Set by the web middleware for the duration of one request (see `choreo.web`).
request_id_var: ContextVar[str | None] = ContextVar("choreo_request_id", default=None)

# The record types the units of work of the current request or saga step published, in order
# (a dict as an ordered set: an attempt whose commit failed and was tried again names them once).
_published_var: ContextVar[dict[str, None] | None] = ContextVar("choreo_published", default=None)


class LogFormat(StrEnum):
    """How a service writes its log lines (`CHOREO_LOG_FORMAT`, `choreo up --log-format`)."""

    AUTO = "auto"
    """TEXT when stderr is a terminal, JSON otherwise."""
    JSON = "json"
    """One JSON object per line, every field: for log collectors and `jq`."""
    TEXT = "text"
    """Short lines coloured with ANSI codes: for a person."""


def resolve_log_format(choice: LogFormat, is_terminal: bool) -> LogFormat:
    """JSON or TEXT: AUTO is TEXT on a terminal and JSON otherwise."""
    if choice is LogFormat.AUTO:
        return LogFormat.TEXT if is_terminal else LogFormat.JSON
    return choice


# Libraries that log every routine step at INFO: their warnings still get through.
QUIET_LOGGERS: Final = {
    "aiokafka": logging.WARNING,
    "uvicorn.access": logging.WARNING,  # `choreo.web` logs each request, with its request id
    "httpx": logging.WARNING,  # one INFO line per call (JWKS fetches, the OpenAPI merger)
}

# Lines that every start and stop prints at INFO and that tell a reader nothing (by logger and
# message template): logged at DEBUG. "Uvicorn running on ..." and the migrations run stay.
ROUTINE: Final = frozenset(
    {
        ("uvicorn.error", "Started server process [%d]"),
        ("uvicorn.error", "Waiting for application startup."),
        ("uvicorn.error", "Application startup complete."),
        ("uvicorn.error", "Shutting down"),
        ("uvicorn.error", "Waiting for application shutdown."),
        ("uvicorn.error", "Application shutdown complete."),
        ("uvicorn.error", "Finished server process [%d]"),
        ("alembic.runtime.migration", "Context impl %s."),
        ("alembic.runtime.migration", "Will assume %s DDL."),
    }
)

# uvicorn installs its own plain-text handlers unless started with `log_config=None`; routing
# its loggers to the root handler keeps stderr one format.
_UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")

# Attributes every LogRecord has (and uvicorn's ANSI-coloured copy of its message); anything
# else on a record came from `extra=` and is logged as a field of its own.
_NOT_EXTRA: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "service",
    "request_id",
    "taskName",
    "color_message",
}


def collect_published() -> dict[str, None]:
    """Start naming the records this task publishes (a request, a saga step): the returned
    ordered set fills as units of work write them to the outbox, until the next call."""
    published: dict[str, None] = {}
    _published_var.set(published)
    return published


def note_published(record_types: Iterable[str]) -> None:
    """Called by the outbox writer: the current request or saga step published these."""
    published = _published_var.get()
    if published is not None:
        published.update(dict.fromkeys(record_types))


def log_saga_step(
    logger: logging.Logger, event: Event[Record], outcome: str, published: Iterable[str]
) -> None:
    """A consumer's one line per record it handled: `OrderCreated <subject> → StockReserved`
    at INFO (what it published, or `applied`), or `already applied` at DEBUG (a duplicate)."""
    led_to = list(published)
    if outcome == "duplicate":
        level, result = logging.DEBUG, "already applied"
    else:
        level, result = logging.INFO, f"→ {', '.join(led_to)}" if led_to else outcome
    fields = {
        "event_type": event.type,
        "event_id": event.id,
        "subject": event.subject,
        "topic": event.topic,
        "outcome": outcome,
        "published": led_to,
    }
    logger.log(level, "%s %s %s", event.type, event.subject, result, extra=fields)


class _ContextFilter(logging.Filter):
    """Stamps the service name and the current request id on each record the handler emits,
    and lowers `ROUTINE` lines to DEBUG (dropping them below the configured level)."""

    def __init__(self, service: str, level: int) -> None:
        super().__init__()
        self.service = service
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and (record.name, record.msg) in ROUTINE:
            if self.level > logging.DEBUG:
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.service = self.service
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _NOT_EXTRA and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, service, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", None),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(entry, default=str, ensure_ascii=False)


_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_LEVEL_STYLES: Final = {
    logging.DEBUG: _DIM,
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_STATUS_STYLES: Final = {2: "\x1b[32m", 3: "\x1b[36m", 4: "\x1b[33m", 5: "\x1b[31m"}
_EVENT_STYLE: Final = "\x1b[36m"
_UUID: Final = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")

MESSAGE_WIDTH: Final = 96
"""The most characters of a DEBUG or INFO message the short form shows (an ellipsis ends a
longer one): behind `choreo up`'s part name and the time, a line stays within 120."""


class ShortFormatter(logging.Formatter):
    """`12:04:05 POST /api/v1/orders 202 31.5 ms → OrderCreated`: a line a person reads.

    An INFO line is the time and the message on one line, at most `MESSAGE_WIDTH` characters,
    with UUIDs cut to their first 8 characters (`1f2e3d4c…`); the fields JSON lines carry are
    left out. A warning or an error is shown whole, with its level, logger and request id, and
    an error with its traceback; DEBUG lines are dim. Coloured with ANSI codes: `choreo up`
    shows them on a terminal and strips them elsewhere.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created)  # local time: a person is reading
        line = f"{_DIM}{moment.strftime('%H:%M:%S')}{_RESET} "
        message = " ".join(record.getMessage().split())
        style = _LEVEL_STYLES.get(record.levelno, "")
        if record.levelno >= logging.WARNING:
            line += f"{style}{record.levelname} {record.name}: {message}{_RESET}"
            request_id = getattr(record, "request_id", None)
            if request_id is not None:
                line += f" {_DIM}[req {request_id}]{_RESET}"
        else:
            message = _UUID.sub(r"\1…", message)
            if len(message) > MESSAGE_WIDTH:
                message = message[: MESSAGE_WIDTH - 1] + "…"
            line += f"{style}{_highlighted(record, message)}{_RESET if style else ''}"
        if record.levelno >= logging.ERROR:
            if record.exc_info:
                line += "\n" + self.formatException(record.exc_info)
            if record.stack_info:
                line += "\n" + self.formatStack(record.stack_info)
        return line


def _highlighted(record: logging.LogRecord, message: str) -> str:
    """A request line's status coloured by its class; a saga step's record type in cyan."""
    status = getattr(record, "status", None)
    if record.name == "choreo.access" and isinstance(status, int):
        style = _STATUS_STYLES.get(status // 100, "")
        return message.replace(f" {status} ", f" {style}{status}{_RESET} ", 1)
    event_type = getattr(record, "event_type", None)
    if isinstance(event_type, str) and message.startswith(event_type):
        return f"{_EVENT_STYLE}{event_type}{_RESET}{message[len(event_type) :]}"
    return message


class _ChoreoHandler(logging.StreamHandler[TextIO]):
    """The root handler `configure_logging` installs; its type lets a second call find it."""


def configure_logging(
    service: str, level: str = "INFO", log_format: LogFormat = LogFormat.AUTO
) -> None:
    """Send every log record to stderr, in `log_format` (AUTO: TEXT when stderr is a terminal).

    Calling it again replaces the previous configuration instead of adding a second handler.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    chosen = resolve_log_format(log_format, sys.stderr.isatty())
    handler = _ChoreoHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen is LogFormat.JSON else ShortFormatter())
    handler.addFilter(_ContextFilter(service, root.level))

    for existing in [h for h in root.handlers if isinstance(h, _ChoreoHandler)]:
        root.removeHandler(existing)
        existing.close()
    root.addHandler(handler)

    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
