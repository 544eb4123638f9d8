"""The SendGrid API sink of the embedded stack: `POST /v3/mail/send` answers like SendGrid and
keeps the message for tests and users to read (`GET /messages`); `/_control/fail` makes the
next sends fail. `python -m choreo.stack.sendgrid_sink --port P` runs it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from choreo import dev_defaults
from choreo.stack.sink import Received, SinkPart, add_sink_routes, serve

SINK_API_KEY = dev_defaults.SENDGRID_API_KEY
"""The key the stack gives services for the sink, which accepts any bearer token."""


class Mailbox(Received):
    """The e-mails received (each given an id and a time) and the failure injected."""

    def __init__(self) -> None:
        super().__init__(_recipients)

    def store(self, body: Mapping[str, Any]) -> str:
        message_id = uuid.uuid4().hex
        received_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.append({"id": message_id, "received_at": received_at, **body})
        return message_id


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

    add_sink_routes(app, mailbox)
    return app


class SendGridSink(SinkPart):
    """The sink on 127.0.0.1:`port`, as its own process."""

    NAME = "sendgrid"
    MODULE = "choreo.stack.sendgrid_sink"

    @property
    def host(self) -> str:
        """The base URL a SendGrid client is given (`SENDGRID_HOST`)."""
        return self.base_url


def main(argv: Sequence[str] | None = None) -> None:
    serve(create_app(), "SendGrid API sink", 8025, argv)


if __name__ == "__main__":
    main()
