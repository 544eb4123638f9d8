"""E-mail through SendGrid's v3 mail send, with the official (synchronous) library run in a
worker thread. Every send ends in an `Outcome`: the answer's status decides accepted, refused
for now or refused; an answer that never came is told apart from a request that never left."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.error import URLError

from python_http_client.exceptions import (
    HTTPError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, From, Mail, To

from notification_service.domain import Outcome, SendResult, outcome_of_status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Email:
    to_email: str
    to_name: str | None
    subject: str
    text: str
    html: str
    # Tags SendGrid keeps with the message and returns in its event webhooks.
    custom_args: Mapping[str, str] = field(default_factory=dict)


class SendGridMailer:
    """SendGrid (or the stack's sink) at `host`."""

    def __init__(
        self, api_key: str, host: str, from_email: str, *, timeout_seconds: float = 10.0
    ) -> None:
        # The HTTP client logs every request's headers (the API key among them) at DEBUG.
        logging.getLogger("python_http_client").setLevel(logging.WARNING)
        self._client = SendGridAPIClient(api_key, host=host.rstrip("/"))
        self._from_email = from_email
        self._timeout_seconds = timeout_seconds

    async def send(self, email: Email) -> SendResult:
        return await asyncio.to_thread(self._send, self._body(email))

    def _body(self, email: Email) -> dict[str, Any]:
        mail = Mail(
            from_email=From(self._from_email, "Choreo"),
            to_emails=To(email.to_email, email.to_name or None),
            subject=email.subject,
            plain_text_content=email.text,
            html_content=email.html,
        )
        for name, value in email.custom_args.items():
            mail.custom_arg = CustomArg(name, value)
        body: dict[str, Any] = mail.get()
        return body

    def _send(self, body: dict[str, Any]) -> SendResult:
        try:
            response = self._client.client.mail.send.post(
                request_body=body, timeout=self._timeout_seconds
            )
        except HTTPError as error:
            status = int(error.status_code)
            return SendResult(outcome_of_status(status), f"HTTP {status}: {_errors_of(error)}")
        except URLError as error:
            # Raised while connecting or writing the request: SendGrid never got it.
            return SendResult(Outcome.REFUSED_FOR_NOW, f"SendGrid unreachable: {error.reason}")
        except (OSError, http.client.HTTPException) as error:
            # The request went out; the answer timed out or the connection dropped.
            return SendResult(Outcome.NO_ANSWER, f"no answer from SendGrid: {error!r}")
        status = int(response.status_code)
        message_id = response.headers.get("X-Message-Id")
        return SendResult(outcome_of_status(status), f"HTTP {status}", message_id=message_id)


def _errors_of(error: Any) -> str:
    """SendGrid's error messages from an error answer's body, briefly."""
    try:
        errors = json.loads(error.body)["errors"]
        text = "; ".join(str(e.get("message")) for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = str(error.reason)
    return text[:500]
