"""The Twilio API sink of the embedded stack: `POST /2010-04-01/Accounts/{sid}/Messages.json`
answers like Twilio's Messages API and keeps the SMS for tests and users to read (`GET
/messages`); `/_control/fail` makes the next sends fail, as the SendGrid sink's does.
`python -m choreo.stack.twilio_sink --port P` runs it."""

from __future__ import annotations

import argparse
import re
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output
from choreo.stack.sendgrid_sink import _LOG_CONFIG, HEALTH_PATH, FailureInjection

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class Outbox:
    """The SMS received and the failure injected, shared by the request handlers."""

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

    def store(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            self._messages.append(dict(message))

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            messages = list(self._messages)
        return messages if to is None else [m for m in messages if m["to"] == to]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


def _error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's error body: {"code", "message", "more_info", "status"}."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def create_app(outbox: Outbox | None = None) -> FastAPI:
    outbox = outbox or Outbox()
    app = FastAPI(title="Twilio sink", docs_url=None, redoc_url=None)

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json", response_model=None)
    async def send(account_sid: str, request: Request) -> JSONResponse:
        # Twilio authenticates with HTTP Basic (account SID, auth token); any token passes here.
        if not request.headers.get("authorization", "").startswith("Basic "):
            return _error(401, 20003, "Authenticate")
        injected = outbox.take_failure()
        if injected is not None:
            return _error(injected, 20500, f"failure injected by the sink ({injected})")
        form = {
            name: values[-1]
            for name, values in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to[:40]} is not a valid phone number.")
        if not sender and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        sid = "SM" + uuid.uuid4().hex
        now = _now()
        message = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }
        outbox.store(message)
        return JSONResponse(message, status_code=201)

    @app.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        """The SMS received, oldest first; `to` keeps those to one number (E.164)."""
        return outbox.messages(to)

    @app.delete("/messages", status_code=204)
    async def clear_messages() -> None:
        outbox.clear()

    @app.post("/_control/fail")
    async def inject_failure(failure: FailureInjection) -> FailureInjection:
        outbox.inject(failure)
        return failure

    @app.delete("/_control/fail", status_code=204)
    async def clear_failure() -> None:
        outbox.inject(None)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class TwilioSink(Part):
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
    def api_base(self) -> str:
        """The base URL a Twilio client is given (`TWILIO_API_BASE`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def spec(self) -> ProcessSpec:
        return ProcessSpec(
            name="twilio",
            command=[self.python, "-m", "choreo.stack.twilio_sink", "--port", str(self.port)],
            ready=http_ok(f"{self.api_base}{HEALTH_PATH}"),
            port=self.port,
            environment=self.environment,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Twilio API sink (SMS)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    parser.add_argument("--port", type=int, default=8026)
    arguments = parser.parse_args(argv)
    uvicorn.run(create_app(), host=arguments.host, port=arguments.port, log_config=_LOG_CONFIG)


if __name__ == "__main__":
    main()
