"""The Twilio API sink of the embedded stack: `POST /2010-04-01/Accounts/{sid}/Messages.json`
answers like Twilio's Messages API and keeps the SMS for tests and users to read (`GET
/messages`); `/_control/fail` makes the next sends fail, as the SendGrid sink's does.
`python -m choreo.stack.twilio_sink --port P` runs it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from choreo.stack.sink import Received, SinkPart, add_sink_routes, serve

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class Outbox(Received):
    """The SMS received and the failure injected."""

    def __init__(self) -> None:
        super().__init__(lambda message: {str(message.get("to", "")).lower()})


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
        outbox.append(message)
        return JSONResponse(message, status_code=201)

    add_sink_routes(app, outbox)
    return app


class TwilioSink(SinkPart):
    """The sink on 127.0.0.1:`port`, as its own process."""

    NAME = "twilio"
    MODULE = "choreo.stack.twilio_sink"

    @property
    def api_base(self) -> str:
        """The base URL a Twilio client is given (`TWILIO_API_BASE`)."""
        return self.base_url


def main(argv: Sequence[str] | None = None) -> None:
    serve(create_app(), "Twilio API sink (SMS)", 8026, argv)


if __name__ == "__main__":
    main()
