"""E-mail through SendGrid's v3 mail send: the body built with the official library's `Mail`
helper, sent with aiohttp on kept-alive connections. Every send ends in an `Outcome`: the
answer's status decides accepted, refused for now or refused; an answer that never came is told
apart from a request that never left.

The official library's own client (python-http-client, urllib in a worker thread, a new
connection per message) cost the service ~610 µs of CPU per message against ~68 µs through
aiohttp (2,000 sends to a loopback server, 8 at a time, two rounds, session 14), and a saga
sends two.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sendgrid.helpers.mail import CustomArg, From, Mail, To

from notification_service.domain import Outcome, SendResult, outcome_of_status

log = logging.getLogger(__name__)

MAIL_SEND_PATH = "/v3/mail/send"
# A request on a kept-alive connection the server is closing at that moment may be lost, and
# would be told as an unknown outcome (never sent again): the client lets an idle connection
# go after 4 s, before servers close theirs (uvicorn, the stack's sink: 5 s).
KEEPALIVE_SECONDS = 4.0
CONNECT_TIMEOUT_SECONDS = 5.0


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
        self._url = host.rstrip("/") + MAIL_SEND_PATH
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        }
        self._from_email = from_email
        # A connect that times out never reached SendGrid; an answer that does not come within
        # `timeout_seconds` of the start is an unknown outcome.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)
        )
        # Made inside the running event loop, at the first send (aiohttp binds it to the loop).
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        """Close the kept-alive connections (the service does it when it stops)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, email: Email) -> SendResult:
        """Send `email`; never raises for a failed send: the result's outcome says how it ended
        and its detail why (SendGrid's own error messages for a refusal)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS),
                timeout=self._timeout,
                trust_env=False,
            )
        body = json.dumps(self._body(email)).encode()
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as answer:
                status = answer.status
                content = await answer.read()
                message_id = answer.headers.get("X-Message-Id")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # Raised while connecting: SendGrid never got the request.
            return SendResult(Outcome.REFUSED_FOR_NOW, f"SendGrid unreachable: {error}")
        except (aiohttp.ClientError, TimeoutError) as error:
            # The request went out; the answer timed out or the connection dropped.
            return SendResult(Outcome.NO_ANSWER, f"no answer from SendGrid: {error!r}")
        if status >= 400:
            return SendResult(outcome_of_status(status), f"HTTP {status}: {_errors_of(content)}")
        return SendResult(outcome_of_status(status), f"HTTP {status}", message_id=message_id)

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


def _errors_of(content: bytes) -> str:
    """SendGrid's error messages from an error answer's body, briefly."""
    try:
        errors = json.loads(content)["errors"]
        text = "; ".join(str(e.get("message")) for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = content.decode("utf-8", "replace")
    return text[:500]
