"""The SendGrid API sink of the embedded stack: `POST /v3/mail/send` answers like SendGrid and
keeps the message for tests and users to read (`GET /messages`); `/_control/fail` makes the
next sends fail. `python -m choreo.stack.sendgrid_sink --port P` runs it."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from choreo import dev_defaults
from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output

HEALTH_PATH = "/healthz"

SINK_API_KEY = dev_defaults.SENDGRID_API_KEY
"""The key the stack gives services for the sink, which accepts any bearer token."""


class FailureInjection(BaseModel):
    status: int = Field(ge=400, le=599)
    count: int | None = Field(default=None, ge=1)
    """How many sends fail; None: every send until the injection is cleared."""


class Mailbox:
    """The messages received and the failure injected, shared by the request handlers."""

    def __init__(self) -> None:
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

    def store(self, body: Mapping[str, Any]) -> str:
        message_id = uuid.uuid4().hex
        received_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with self._lock:
            self._messages.append({"id": message_id, "received_at": received_at, **body})
        return message_id

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            messages = list(self._messages)
        if to is None:
            return messages
        return [message for message in messages if to.lower() in _recipients(message)]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


def _recipients(message: Mapping[str, Any]) -> set[str]:
    return {
        str(address.get("email", "")).lower()
        for personalization in message.get("personalizations", [])
        for field in ("to", "cc", "bcc")
        for address in personalization.get(field, [])
        if isinstance(address, dict)
    }


def _errors(status: int, *problems: tuple[str, str | None]) -> JSONResponse:
    """SendGrid's error body: {"errors": [{"message", "field", "help"}]}."""
    return JSONResponse(
        {
            "errors": [
                {"message": message, "field": field, "help": None} for message, field in problems
            ]
        },
        status_code=status,
    )


def _problems(body: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """What SendGrid would reject in a v3 mail/send body (the checks a client can get wrong)."""
    problems: list[tuple[str, str | None]] = []
    templated = "template_id" in body
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("The personalizations field is required.", "personalizations"))
    else:
        for index, personalization in enumerate(personalizations):
            to = personalization.get("to") if isinstance(personalization, dict) else None
            if not isinstance(to, list) or not to:
                problems.append(("The to array is required.", f"personalizations.{index}.to"))
            elif not all(isinstance(address, dict) and address.get("email") for address in to):
                problems.append(("Each address needs an email.", f"personalizations.{index}.to"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        problems.append(("The from object must be provided for every email send.", "from"))
    personal_subjects = isinstance(personalizations, list) and all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    )
    if not templated and not body.get("subject") and not personal_subjects:
        problems.append(("The subject is required.", "subject"))
    content = body.get("content")
    if not templated and not (
        isinstance(content, list)
        and content
        and all(isinstance(part, dict) and part.get("type") and "value" in part for part in content)
    ):
        problems.append(("The content value must be a string at least one character.", "content"))
    return problems


def create_app(mailbox: Mailbox | None = None) -> FastAPI:
    mailbox = mailbox or Mailbox()
    app = FastAPI(title="SendGrid sink", docs_url=None, redoc_url=None)

    @app.post("/v3/mail/send", response_model=None)
    async def send(request: Request) -> Response:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _errors(
                401, ("The provided authorization grant is invalid, expired, or revoked", None)
            )
        injected = mailbox.take_failure()
        if injected is not None:
            return _errors(injected, (f"failure injected by the sink ({injected})", None))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _errors(400, ("Bad Request", None))
        if not isinstance(body, dict):
            return _errors(400, ("Bad Request", None))
        problems = _problems(body)
        if problems:
            return _errors(400, *problems)
        message_id = mailbox.store(body)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    @app.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        """The messages received, oldest first; `to` keeps those addressed to one recipient."""
        return mailbox.messages(to)

    @app.delete("/messages", status_code=204)
    async def clear_messages() -> None:
        mailbox.clear()

    @app.post("/_control/fail")
    async def inject_failure(failure: FailureInjection) -> FailureInjection:
        mailbox.inject(failure)
        return failure

    @app.delete("/_control/fail", status_code=204)
    async def clear_failure() -> None:
        mailbox.inject(None)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class SendGridSink(Part):
    """The sink on 127.0.0.1:`port`, as its own process."""

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
    def host(self) -> str:
        """The base URL a SendGrid client is given (`SENDGRID_HOST`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def spec(self) -> ProcessSpec:
        return ProcessSpec(
            name="sendgrid",
            command=[self.python, "-m", "choreo.stack.sendgrid_sink", "--port", str(self.port)],
            ready=http_ok(f"{self.host}{HEALTH_PATH}"),
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SendGrid API sink")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    parser.add_argument("--port", type=int, default=8025)
    arguments = parser.parse_args(argv)
    uvicorn.run(create_app(), host=arguments.host, port=arguments.port, log_config=_LOG_CONFIG)


if __name__ == "__main__":
    main()
