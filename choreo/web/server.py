"""The kit's uvicorn server: uvicorn's, with its housekeeping tick once a second instead of
ten times, and a stop that takes effect at once.

uvicorn's main loop wakes every 100 ms to refresh its `Date` header (once a second) and to see
whether a signal asked it to stop. On an idle stack those wake-ups were most of what the
HTTP-only parts did: 0.0017 cores per process (60 ms against 10 ms of CPU in 30 s, an idle
uvicorn app with each loop, measured side by side), eight such processes in `choreo up`.
Ticking once a second keeps the header's one-second resolution (RFC 9110 §6.6.1 gives it in
seconds), and a stop asked by a signal or by `stop()` wakes the loop instead of waiting for
the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_SECONDS = 1.0
"""How often the server refreshes its `Date` header and runs uvicorn's per-tick checks."""

_TICKS_PER_SECOND = 10
"""uvicorn's `on_tick` counts tenths of a second: a multiple of 10 refreshes the header."""


class Server(uvicorn.Server):
    """A uvicorn server that ticks every `TICK_SECONDS` and stops as soon as it is asked."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Start a graceful shutdown, as SIGTERM does; safe from any thread."""
        self.should_exit = True
        self._wake_up()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._wake_up()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _TICKS_PER_SECOND) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            should_exit = await self.on_tick(counter)

    def _wake_up(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            # A signal handler runs between any two bytecodes of the loop's thread: hand the
            # event to the loop rather than touch its waiters from there.
            loop.call_soon_threadsafe(wake.set)


def run(app: object, **options: object) -> None:
    """Serve `app` as `uvicorn.run(app, **options)` does, on `Server`: exits with uvicorn's
    start-up failure status (3) when the app's start-up fails."""
    config = uvicorn.Config(app, **options)  # type: ignore[arg-type]
    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(uvicorn.config.STARTUP_FAILURE)
