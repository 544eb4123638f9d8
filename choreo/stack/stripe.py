"""The Stripe API emulator of the embedded stack: localstripe, listening on loopback only, its
state kept in the stack's data directory. `python -m choreo.stack.stripe --port P` runs it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import operator
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from choreo import dev_defaults
from choreo.stack.part import Part
from choreo.stack.probes import PROBE_USER_AGENT, http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output
from choreo.stack.stripe_state import MIN_SAVE_INTERVAL, StateFile

TEST_SECRET_KEY = dev_defaults.STRIPE_API_KEY
"""localstripe accepts any `sk_test_` key; this one is the stack's default."""


class LocalStripe(Part):
    """localstripe on 127.0.0.1:`port`; with `state_file`, customers, payment methods and
    charges survive a restart."""

    def __init__(
        self,
        port: int,
        state_file: Path | None = None,
        *,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
        output: OutputSink = log_output,
        webhook_url: str | None = None,
    ) -> None:
        super().__init__(output)
        self.port = port
        self.state_file = state_file
        self.webhook_url = webhook_url
        self.python = python
        self.environment = environment

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spec(self) -> ProcessSpec:
        command = [self.python, "-m", "choreo.stack.stripe", "--port", str(self.port)]
        if self.state_file is not None:
            command += ["--state-file", str(self.state_file.resolve())]
        if self.webhook_url is not None:
            command += ["--webhook-url", self.webhook_url]
        return ProcessSpec(
            name="stripe",
            command=command,
            ready=http_ok(
                f"{self.api_base}/v1/customers?limit=1",
                headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
            ),
            port=self.port,
            environment=self.environment,
        )


WEBHOOK_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed")
"""The events the emulator sends to the payment service's endpoint (localstripe sends each
once, a second after it happened, with no retry): the two of an intent's outcome it emits."""


async def _keep_saving(state: StateFile, store: dict[str, Any]) -> AsyncIterator[None]:
    """An aiohttp cleanup context: saves every `MIN_SAVE_INTERVAL` while the app runs, and a
    whole snapshot at its end (SIGTERM, Ctrl-C), which also holds any change no request made
    (localstripe settles a SEPA debit half a second after its request)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(MIN_SAVE_INTERVAL)
            state.save(store)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.snapshot(store)


class _Mutating:
    """Whether a mutating request (POST, PUT, DELETE) is being handled: the objects it reads
    from the store are the ones it may change. localstripe handles one request at a time on
    the event loop between awaits, and its handlers do not await while they change objects."""

    def __init__(self) -> None:
        self.active = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method not in ("POST", "PUT", "DELETE"):
            return await handler(request)  # type: ignore[no-any-return]
        self.active += 1
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            self.active -= 1


def _keep_state_in(state_file: Path | None) -> tuple[StateFile, _Mutating]:
    """Keep localstripe's store in `state_file` (None: keep nothing), a snapshot and a journal
    of what changed (choreo.stack.stripe_state), and index its store by object type."""
    from localstripe import resources

    state = StateFile(state_file, is_stored=lambda value: isinstance(value, resources.StripeObject))
    mutating = _Mutating()
    by_type: dict[str, dict[str, Any]] = {}

    def kind(key: str) -> str:
        return key.partition(":")[0]

    def load(store: dict[str, Any]) -> None:
        state.load(store)
        by_type.clear()
        for key, value in store.items():
            by_type.setdefault(kind(key), {})[key] = value

    def get_item(store: dict[str, Any], key: str, default: Any = None) -> Any:
        if mutating.active:
            state.mark(key)
        return dict.get(store, key, default)

    def set_item(store: dict[str, Any], key: str, value: Any) -> None:
        dict.__setitem__(store, key, value)
        by_type.setdefault(kind(key), {})[key] = value
        state.mark(key)

    def del_item(store: dict[str, Any], key: str) -> None:
        dict.__delitem__(store, key)
        by_type.get(kind(key), {}).pop(key, None)
        state.mark(key)

    def list_all(
        cls: Any, /, url: str, limit: Any = None, starting_after: Any = None, **kwargs: Any
    ) -> Any:
        """localstripe's `StripeObject._api_list_all`, reading the type's index: the original
        scans the whole store, and a charge lists its refunds a dozen times as it is made, so
        each charge cost more as history grew (22.9 ms of CPU with 2,000 charges behind it,
        1.6 ms with none)."""
        created = kwargs.pop("created", None)
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        listed = resources.List(url, limit=limit, starting_after=starting_after)
        objects = by_type.get(cls.object, {})
        keep = _created_filter(created, resources.UserError)
        since = _created_since(created)
        if since is not None:
            objects = _created_at_or_after(objects, since)
        found = {k: o for k, o in objects.items() if keep(o.created)} if keep else objects
        if mutating.active:  # a change may follow (an invoice's pending items)
            for key in found:
                state.mark(key)
        listed._list = list(found.values())
        return listed

    # Functions, not bound methods: set on the class, each receives the store as `self`.
    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = lambda store: None  # saved by `_keep_saving` instead
    resources.Store.get = get_item
    resources.Store.__setitem__ = set_item
    resources.Store.__delitem__ = del_item
    resources.StripeObject._api_list_all = classmethod(list_all)
    resources.store.try_load_from_disk()
    return state, mutating


def _report_failed_authentication() -> None:
    """Send `payment_intent.payment_failed` when a customer fails 3-D Secure, as Stripe does
    ("Types of events"); localstripe's `_authenticate` sends nothing then, so an order waiting
    for its customer would learn of the failure only from its deadline.

    Replaces the route's entry in localstripe's table before its server module reads it."""
    from localstripe import resources
    from localstripe.webhooks import schedule_webhook

    path = "/v1/payment_intents/{id}/_authenticate"
    original = resources.PaymentIntent._api_authenticate

    def authenticate(**data: Any) -> Any:
        intent = original(**data)
        if intent._authentication_failed:
            schedule_webhook(resources.Event("payment_intent.payment_failed", intent))
        return intent

    resources.extra_apis[:] = [
        (method, url, authenticate if url == path else handler)
        for method, url, handler in resources.extra_apis
    ]


_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _created_filter(created: Any, error: Any) -> Callable[[int], bool] | None:
    """The `created` filter of Stripe's list endpoints (`created=<ts>` or any of
    `created[gt|gte|lt|lte]=<ts>`, Unix seconds), which localstripe's base list refuses: the
    payment service's open-intent sweep lists only the intents created since it last looked.
    None when there is no filter; `error(400, ...)` for a malformed one."""
    if created is None:
        return None
    bounds = created if isinstance(created, dict) else {"eq": created}
    checks: list[Callable[[int], bool]] = []
    for name, raw in bounds.items():
        compare = operator.eq if name == "eq" else _COMPARISONS.get(name)
        try:
            moment = int(raw)
        except (TypeError, ValueError):
            compare = None
        if compare is None:
            raise error(400, f"Invalid created filter: {name}={raw!r}")
        checks.append(functools.partial(_holds, compare, moment))
    return lambda value: all(check(value) for check in checks)


def _holds(compare: Callable[[int, int], bool], moment: int, value: int) -> bool:
    return compare(value, moment)


CREATED_SLACK_SECONDS = 60
"""How far back in `created` an object stored later may be than one stored before it (the
host's clock stepped back): `_created_at_or_after` reads that much further."""


def _created_since(created: Any) -> int | None:
    """The lower bound of a `created[gt|gte]` filter (Unix seconds), None without one."""
    if not isinstance(created, dict):
        return None
    bounds = [int(created[name]) for name in ("gt", "gte") if name in created]
    return max(bounds) if bounds else None


def _created_at_or_after(objects: dict[str, Any], since: int) -> dict[str, Any]:
    """The objects created at or after `since` (and a few before, see CREATED_SLACK_SECONDS),
    in the order stored: read from the newest back, since the store keeps creation order, so a
    list of the last minute costs the same after 10,000 intents as after 10 (the whole type
    was scanned: 21 ms a page with 10,000 intents; the sweep lists every minute)."""
    recent = []
    for key, value in reversed(objects.items()):
        if value.created < since - CREATED_SLACK_SECONDS:
            break
        recent.append((key, value))
    return dict(reversed(recent))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="localstripe, the Stripe API emulator")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", type=Path, default=None)
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="send the PaymentIntents' events here, signed with STRIPE_WEBHOOK_SECRET from the "
        "environment (the development default without it)",
    )
    arguments = parser.parse_args(argv)

    state, mutating = _keep_state_in(arguments.state_file)
    _report_failed_authentication()
    from localstripe.resources import store
    from localstripe.server import app

    app.middlewares.append(mutating.middleware)
    app.cleanup_ctx.append(lambda _: _keep_saving(state, store))
    if arguments.webhook_url is not None:
        # localstripe keeps its endpoints in memory only: registered at every start.
        from localstripe.webhooks import register_webhook

        secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or dev_defaults.STRIPE_WEBHOOK_SECRET
        register_webhook("choreo", arguments.webhook_url, secret, list(WEBHOOK_EVENTS))

    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.INFO)
    access_log.addHandler(logging.StreamHandler())
    web.run_app(
        app,
        host=arguments.host,
        port=arguments.port,
        access_log=access_log,
        access_log_class=_AccessLogger,
    )


class _AccessLogger(AbstractAccessLogger):
    """`POST /v1/payment_intents 200 4.1 ms`: one short line a call, none for the probes of
    `choreo up`'s supervisor (every 2 s)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.headers.get("User-Agent") == PROBE_USER_AGENT:
            return
        self.logger.info(
            "%s %s %d %.1f ms", request.method, request.path_qs, response.status, time * 1000
        )


if __name__ == "__main__":
    main()
