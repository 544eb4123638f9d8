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
import pickle
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from choreo import dev_defaults
from choreo.stack.part import Part
from choreo.stack.probes import PROBE_USER_AGENT, http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output

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

SAVE_SHARE = 0.05
"""The most of the emulator's time its saves may take: after a save that took d seconds, the
next waits at least d / SAVE_SHARE (and at least `MIN_SAVE_INTERVAL`)."""
MIN_SAVE_INTERVAL = 1.0


class _StateFile:
    """localstripe's persistence, bounded: its whole store pickled to `path` now and then.

    localstripe itself pickles its whole store after every POST, PUT and DELETE, to
    /tmp/localstripe.pickle (one file for every instance on the machine), so each call cost
    more as history grew (~120 ms a saga with a 2 MB store, issue 14). Here a change only marks
    the store dirty; a background task saves it at most every `MIN_SAVE_INTERVAL` seconds and
    at most `SAVE_SHARE` of the time, and once more when the emulator stops (SIGTERM, Ctrl-C).
    A SIGKILL loses the changes since the last save: a second's worth, or more for a store so
    large that one save takes over 50 ms.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.dirty = False
        self.saves = 0

    def load(self, store: dict[str, object]) -> None:
        if self.path is None or not self.path.exists():
            return
        with self.path.open("rb") as source:
            saved = pickle.load(source)
        store.clear()
        store.update(saved)

    def mark(self, store: dict[str, object]) -> None:
        del store
        self.dirty = self.path is not None

    def save(self, store: dict[str, object]) -> float:
        """Save now (on the event loop, so no handler changes the store meanwhile); seconds."""
        started = time.perf_counter()
        if self.path is not None and self.dirty:
            self.dirty = False
            partial = self.path.with_name(self.path.name + ".partial")
            with partial.open("wb") as target:
                pickle.dump(dict(store), target, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, self.path)  # a crash mid-save never leaves a truncated store
            self.saves += 1
        return time.perf_counter() - started

    async def keep_saving(self, store: dict[str, object]) -> AsyncIterator[None]:
        """An aiohttp cleanup context: saves while the app runs, and once more at its end."""

        async def loop() -> None:
            pause = MIN_SAVE_INTERVAL
            while True:
                await asyncio.sleep(pause)
                pause = max(MIN_SAVE_INTERVAL, self.save(store) / SAVE_SHARE)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.save(store)


def _keep_state_in(state_file: Path | None) -> _StateFile:
    """Point localstripe's persistence at `state_file` (None: keep nothing), bounded, and
    index its store by object type."""
    from localstripe import resources

    state = _StateFile(state_file)
    by_type: dict[str, dict[str, Any]] = {}

    def kind(key: str) -> str:
        return key.partition(":")[0]

    def load(store: dict[str, Any]) -> None:
        state.load(store)
        by_type.clear()
        for key, value in store.items():
            by_type.setdefault(kind(key), {})[key] = value

    def set_item(store: dict[str, Any], key: str, value: Any) -> None:
        dict.__setitem__(store, key, value)
        by_type.setdefault(kind(key), {})[key] = value
        state.mark(store)

    def del_item(store: dict[str, Any], key: str) -> None:
        dict.__delitem__(store, key)
        by_type.get(kind(key), {}).pop(key, None)
        state.mark(store)

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
        objects = by_type.get(cls.object, {}).values()
        keep = _created_filter(created, resources.UserError)
        listed._list = [o for o in objects if keep(o.created)] if keep else list(objects)
        return listed

    # Functions, not bound methods: set on the class, each receives the store as `self`.
    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = lambda store: state.mark(store)
    resources.Store.__setitem__ = set_item
    resources.Store.__delitem__ = del_item
    resources.StripeObject._api_list_all = classmethod(list_all)
    resources.store.try_load_from_disk()
    return state


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

    state = _keep_state_in(arguments.state_file)
    _report_failed_authentication()
    from aiohttp import web
    from localstripe.resources import store
    from localstripe.server import app

    app.cleanup_ctx.append(lambda _: state.keep_saving(store))
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
