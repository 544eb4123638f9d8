"""The S3 endpoint behind `choreo up --durable-broker`: a `moto` server on loopback, holding the
broker's bucket so that the broker can be killed and restarted without losing a record.
`python -m choreo.stack.s3 --port P` runs it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import threading
from collections.abc import Mapping, Sequence

import httpx

from choreo.stack.errors import StackError
from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output

BUCKET = "tansu"


class MotoS3(Part):
    """moto's server on 127.0.0.1:`port`, with the bucket `BUCKET` created once it is ready.

    moto keeps its objects in memory: the broker's records survive the broker, not this part.
    """

    def __init__(
        self,
        port: int,
        *,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
        output: OutputSink = log_output,
    ) -> None:
        super().__init__(output)
        self.port = port
        self.python = python
        self.environment = environment

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_url(self) -> str:
        """The broker's `--storage-engine` on this endpoint."""
        return f"s3://{BUCKET}/"

    def client_environment(self) -> dict[str, str]:
        """What an S3 client (the broker) needs to use this endpoint."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "choreo",
            "AWS_SECRET_ACCESS_KEY": "choreo",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def spec(self) -> ProcessSpec:
        if importlib.util.find_spec("moto") is None:
            raise StackError("--durable-broker needs moto's server: pip install 'moto[server]'")
        return ProcessSpec(
            name="s3",
            command=[self.python, "-m", "choreo.stack.s3", "--port", str(self.port)],
            ready=http_ok(f"{self.endpoint}/moto-api/"),
            port=self.port,
            environment=self.environment,
            after_ready=self.create_bucket,
        )

    def create_bucket(self) -> None:
        response = httpx.put(f"{self.endpoint}/{BUCKET}", timeout=10)
        if response.status_code not in (httpx.codes.OK, httpx.codes.CONFLICT):
            raise StackError(f"cannot create bucket {BUCKET}: {response.status_code}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's S3 on 127.0.0.1, without request logs")
    parser.add_argument("--port", type=int, default=9000)
    arguments = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    # One log line per S3 request would drown every other part's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ThreadedMotoServer("127.0.0.1", arguments.port, verbose=False).start()
    print(f"S3 (moto) on http://127.0.0.1:{arguments.port}", flush=True)
    threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
