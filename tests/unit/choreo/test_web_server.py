"""The kit's uvicorn server: serves as uvicorn does, ticks seldom, and stops when asked without
waiting for its next tick (the tick is set to an hour here, so only the wake-up can end it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from email.utils import parsedate_to_datetime

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from choreo.testing import free_port
from choreo.web import server as server_module
from choreo.web.server import Server


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def _started(server: Server) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            return task
        await asyncio.sleep(0.01)
    task.cancel()
    raise AssertionError("the server did not start")


@pytest.fixture
def hour_long_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "TICK_SECONDS", 3600.0)


async def test_it_answers_with_a_date_header_and_stops_when_asked(hour_long_tick: None) -> None:
    port = free_port()
    server = Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_config=None))
    task = await _started(server)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/hello")
    assert response.json() == {"hello": "world"}
    assert parsedate_to_datetime(response.headers["date"]).tzinfo is not None

    server.stop()
    await asyncio.wait_for(task, 30)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/hello")


_SERVE_WITH_AN_HOUR_LONG_TICK = """
import sys
import uvicorn
from choreo.web import server
server.TICK_SECONDS = 3600.0

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

server.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def test_sigterm_stops_it_without_waiting_for_a_tick() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE_WITH_AN_HOUR_LONG_TICK, str(port)
    )
    try:
        for _ in range(1000):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the server did not start")
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # uvicorn re-raises the signal it caught once it has shut down.
    assert returncode == -signal.SIGTERM
