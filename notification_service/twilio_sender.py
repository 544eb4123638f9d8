"""SMS through Twilio's Messages API, with the official `twilio` library's asynchronous client
(aiohttp) pointed at `TWILIO_API_BASE` (the stack's Twilio sink in dev). Every send ends in an
`Outcome`, as an e-mail's does: the answer's status decides accepted, refused for now or
refused; an answer that never came (a timeout, a dropped connection) is an unknown outcome,
told apart from a request that could not connect at all."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from notification_service.domain import Outcome, SendResult, outcome_of_status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sms:
    to: str  # E.164
    body: str


class TwilioSender:
    """Twilio (or the stack's sink) at `api_base`, as account `account_sid`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str,
        from_number: str,
        *,
        timeout_seconds: float = 10.0,
    ) -> None:
        # The library logs each request (URL and body: the phone number, the text) and each
        # response's headers at INFO, from `twilio.http_client` and `twilio.async_http_client`.
        logging.getLogger("twilio").setLevel(logging.WARNING)
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_base = api_base.rstrip("/")
        self._from_number = from_number
        self._timeout_seconds = timeout_seconds
        self._client: Client | None = None

    def _client_in_loop(self) -> Client:
        """The client, made on the first send: its aiohttp session belongs to the running loop."""
        if self._client is None:
            client = Client(
                self._account_sid,
                self._auth_token,
                http_client=AsyncTwilioHttpClient(timeout=self._timeout_seconds),
            )
            client.api.base_url = self._api_base
            self._client = client
        return self._client

    async def send(self, sms: Sms) -> SendResult:
        client = self._client_in_loop()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                message = await client.messages.create_async(
                    to=sms.to, from_=self._from_number, body=sms.body
                )
        except TwilioException as error:
            status = int(getattr(error, "status", 0) or 0)
            text = str(getattr(error, "msg", None) or getattr(error, "detail", None) or "")
            return SendResult(outcome_of_status(status), f"HTTP {status}: {text[:300]}")
        except aiohttp.ClientConnectorError as error:
            # Raised while connecting: Twilio never got the request.
            return SendResult(Outcome.REFUSED_FOR_NOW, f"Twilio unreachable: {error.os_error}")
        except (TimeoutError, aiohttp.ClientError) as error:
            # The request went out; the answer timed out or the connection dropped.
            return SendResult(Outcome.NO_ANSWER, f"no answer from Twilio: {error!r}")
        return SendResult(Outcome.ACCEPTED, "HTTP 201", message_id=message.sid)

    async def aclose(self) -> None:
        """Close the HTTP session (the kit calls it when the service stops)."""
        if self._client is not None:
            http_client = self._client.http_client
            if isinstance(http_client, AsyncTwilioHttpClient):
                await http_client.close()
