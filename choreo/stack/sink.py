"""What the stack's provider sinks (SendGrid's e-mail, Twilio's SMS) share: the messages they
received and the failure an operator injected, the routes that read and control them
(`GET`/`DELETE /messages`, `POST`/`DELETE /_control/fail`, `/healthz`), their short access log,
and how each runs as a part of the stack (`python -m choreo.stack.<module> --port P`).

Each sink module adds only its provider's send endpoint and error shape."""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output
from choreo.web import server

HEALTH_PATH = "/healthz"


class FailureInjection(BaseModel):
    status: int = Field(ge=400, le=599)
    count: int | None = Field(default=None, ge=1)
    """How many sends fail; None: every send until the injection is cleared."""


class Received:
    """The messages a sink received and the failure injected, shared by its request handlers.

    `recipients(message)` names whom a message went to (lower case), for `GET /messages?to=`."""

    def __init__(self, recipients: Callable[[Mapping[str, Any]], set[str]]) -> None:
        self._recipients = recipients
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._failure: FailureInjection | None = None

    def inject(self, failure: FailureInjection | None) -> None:
        with self._lock:
            self._failure = failure

    def take_failure(self) -> int | None:
        """The status the next send must answer, if a failure is injected."""
        with self._lock:
            failure = self._failure
            if failure is None:
                return None
            if failure.count is not None:
                remaining = failure.count - 1
                self._failure = (
                    failure.model_copy(update={"count": remaining}) if remaining else None
                )
            return failure.status

    def append(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            self._messages.append(dict(message))

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """The messages received, oldest first; `to` keeps those to one recipient."""
        with self._lock:
            messages = list(self._messages)
        if to is None:
            return messages
        return [message for message in messages if to.lower() in self._recipients(message)]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


def add_sink_routes(app: FastAPI, received: Received) -> None:
    """The routes every sink has besides its provider's own."""

    @app.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        """The messages received, oldest first; `to` keeps those to one recipient."""
        return received.messages(to)

    @app.delete("/messages", status_code=204)
    async def clear_messages() -> None:
        received.clear()

    @app.post("/_control/fail")
    async def inject_failure(failure: FailureInjection) -> FailureInjection:
        received.inject(failure)
        return failure

    @app.delete("/_control/fail", status_code=204)
    async def clear_failure() -> None:
        received.inject(None)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


class SinkPart(Part):
    """A sink on 127.0.0.1:`port`, as its own process (`python -m <MODULE> --port P`)."""

    NAME: ClassVar[str]
    MODULE: ClassVar[str]

    def __init__(
        self,
        port: int,
        *,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
        output: OutputSink = log_output,
    ) -> None:
        super().__init__(output)
        self.port = port
        self.python = python
        self.environment = environment

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spec(self) -> ProcessSpec:
        return ProcessSpec(
            name=self.NAME,
            command=[self.python, "-m", self.MODULE, "--port", str(self.port)],
            ready=http_ok(f"{self.base_url}{HEALTH_PATH}"),
            port=self.port,
            environment=self.environment,
        )


class _NotTheProbes(logging.Filter):
    """Leaves out the access lines of `/healthz`, which `choreo up`'s supervisor polls."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) > 2 and args[2] == HEALTH_PATH)


# uvicorn's logging, shorter: `POST /v3/mail/send HTTP/1.1 202` a request, its start-up lines
# left out (`choreo up` says when the sink is ready).
_LOG_CONFIG: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
_LOG_CONFIG["formatters"]["access"]["fmt"] = "%(request_line)s %(status_code)s"
_LOG_CONFIG["filters"] = {"probes": {"()": _NotTheProbes}}
_LOG_CONFIG["handlers"]["access"]["filters"] = ["probes"]
_LOG_CONFIG["loggers"]["uvicorn.error"]["level"] = "WARNING"


def serve(app: FastAPI, description: str, default_port: int, argv: Sequence[str] | None) -> None:
    """Run a sink's app from its module's command line (`--host`, `--port`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    parser.add_argument("--port", type=int, default=default_port)
    arguments = parser.parse_args(argv)
    server.run(app, host=arguments.host, port=arguments.port, log_config=_LOG_CONFIG)
