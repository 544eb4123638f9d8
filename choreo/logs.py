"""Structured logging: one JSON object per line on stderr (or a compact human format on a TTY).

Every record carries the service name and, inside an HTTP request, the request id, so a line in
any service's log can be matched with the response the client saw (`X-Request-ID`).
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

# Set by the web middleware for the duration of one request (see `choreo.web`).
request_id_var: ContextVar[str | None] = ContextVar("choreo_request_id", default=None)

# Libraries that log every routine step at INFO: their warnings still get through.
QUIET_LOGGERS: Final = {
    "aiokafka": logging.WARNING,
    "uvicorn.access": logging.WARNING,  # `choreo.web` logs each request, with its request id
    "httpx": logging.WARNING,  # one INFO line per outgoing call (Stripe, SendGrid, services)
}

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


class _ContextFilter(logging.Filter):
    """Stamps the service name and the current request id on each record the handler emits."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
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


class HumanFormatter(logging.Formatter):
    """`12:04:05.123 INFO  order_service.api: message  key=value [req 1f2e…]` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created)  # local time: a person is reading
        line = (
            f"{moment.strftime('%H:%M:%S')}.{moment.microsecond // 1000:03d} "
            f"{record.levelname:<5} {record.name}: {record.getMessage()}"
        )
        extras = " ".join(f"{key}={value}" for key, value in _extra_fields(record).items())
        if extras:
            line += f"  {extras}"
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line += f" [req {request_id}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _ChoreoHandler(logging.StreamHandler[TextIO]):
    """The root handler `configure_logging` installs; its type lets a second call find it."""


def configure_logging(service: str, level: str = "INFO", json: bool | None = None) -> None:
    """Send every log record to stderr, as JSON lines unless stderr is a terminal.

    Calling it again replaces the previous configuration instead of adding a second handler.
    """
    if json is None:
        json = not sys.stderr.isatty()
    handler = _ChoreoHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else HumanFormatter())
    handler.addFilter(_ContextFilter(service))

    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _ChoreoHandler)]:
        root.removeHandler(existing)
        existing.close()
    root.addHandler(handler)
    root.setLevel(level.upper())

    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
