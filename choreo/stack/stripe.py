"""The Stripe API emulator of the embedded stack: localstripe, listening on loopback only, its
state kept in the stack's data directory. `python -m choreo.stack.stripe --port P` runs it."""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output

TEST_SECRET_KEY = "sk_test_choreo"
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
    ) -> None:
        super().__init__(output)
        self.port = port
        self.state_file = state_file
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


def _keep_state_in(state_file: Path | None) -> None:
    """Point localstripe's persistence at `state_file` (None: keep nothing).

    localstripe saves its whole store after every change to /tmp/localstripe.pickle, one file
    shared by every instance on the machine; each stack keeps its own instead.
    """
    from localstripe import resources

    def load(store: dict[str, object]) -> None:
        if state_file is None or not state_file.exists():
            return
        with state_file.open("rb") as source:
            saved = pickle.load(source)
        store.clear()
        store.update(saved)

    def save(store: dict[str, object]) -> None:
        if state_file is None:
            return
        partial = state_file.with_name(state_file.name + ".partial")
        with partial.open("wb") as target:
            pickle.dump(store, target, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, state_file)  # a crash mid-save never leaves a truncated store

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = save
    resources.store.try_load_from_disk()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="localstripe on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", type=Path, default=None)
    arguments = parser.parse_args(argv)

    _keep_state_in(arguments.state_file)
    from aiohttp import web
    from localstripe.server import app

    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.INFO)
    access_log.addHandler(logging.StreamHandler())
    web.run_app(app, host="127.0.0.1", port=arguments.port, access_log=access_log)


if __name__ == "__main__":
    main()
