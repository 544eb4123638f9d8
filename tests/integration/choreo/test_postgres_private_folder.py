"""As root, the embedded PostgreSQL starts from a clone in a folder only root may enter (issue
16): before, initdb failed with "Permission denied" for the account the server runs as."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from choreo.stack import postgres as postgres_module
from choreo.stack import postgres_account
from choreo.stack.errors import StackError
from choreo.stack.postgres import EmbeddedPostgres, installation
from choreo.stack.postgres_account import SYSTEM_ACCOUNT
from choreo.testing import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only as root does PostgreSQL run as another account, one that cannot enter the"
    " folders of the user who started it",
)


@pytest.fixture
def private_folder() -> Iterator[Path]:
    """A folder like /root/work/clone: mode 0700, under another 0700 folder."""
    outer = Path(tempfile.mkdtemp(prefix="choreo-private-"))
    inner = outer / "clone"
    inner.mkdir(mode=0o700)
    try:
        yield inner
    finally:
        shutil.rmtree(outer)


@pytest.fixture
def private_install(private_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The wheel's install copied into the private folder, as in a clone's .venv."""
    wheel = installation()
    site_packages = private_folder / ".venv" / "site-packages"
    install = site_packages / wheel.parent.name / wheel.name
    shutil.copytree(wheel, install, symlinks=True)
    libraries = wheel.parent.parent / f"{wheel.parent.name}.libs"  # auditwheel's, for libpq
    if libraries.is_dir():
        shutil.copytree(libraries, site_packages / libraries.name, symlinks=True)
    monkeypatch.setattr(postgres_module, "installation", lambda: install)
    return install


def mode(folder: Path) -> int:
    return stat.S_IMODE(folder.stat().st_mode)


@pytest.fixture(params=["in the clone", "in a temporary folder"])
def data_dir(request: pytest.FixtureRequest, private_folder: Path) -> Iterator[Path]:
    """`choreo up`'s place (.choreo/pg in the clone), or the test fixtures' (a `mktemp -d`
    folder of its own: before, initdb failed there with "Permission denied")."""
    with tempfile.TemporaryDirectory(prefix="choreo-test-pg-") as scratch:
        if request.param == "in the clone":
            data_dir = private_folder / ".choreo" / "pg"
        else:
            data_dir = Path(scratch) / "data"
        yield data_dir
        if data_dir.is_symlink():  # moved to a folder PostgreSQL's account may enter
            relocated = data_dir.resolve()
            shutil.rmtree(relocated)
            relocated.with_name(f"{relocated.name}.origin").unlink()


def test_starts_from_a_private_folder_and_keeps_its_data(
    private_folder: Path, private_install: Path, data_dir: Path
) -> None:
    server = EmbeddedPostgres(data_dir, free_port())
    with server:
        pid = server.pid
        with psycopg.connect(server.url("postgres")) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
            connection.execute("CREATE TABLE kept (n int)")
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (data_dir / "postmaster.pid").exists()  # removed only by a clean shutdown

    again = EmbeddedPostgres(data_dir, free_port())
    with again, psycopg.connect(again.url("postgres")) as connection:
        assert connection.execute("SELECT count(*) FROM kept").fetchone() == (0,)

    assert (data_dir / "PG_VERSION").exists()
    assert private_folder not in Path(again.spec.command[0]).parents
    assert mode(private_folder) == mode(private_folder.parent) == 0o700  # not opened up


def test_says_which_folder_the_account_cannot_enter_when_nothing_can_be_shared(
    private_folder: Path, private_install: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    anyone_writes = private_folder / "shared"
    anyone_writes.mkdir()
    anyone_writes.chmod(0o777)
    monkeypatch.setattr(postgres_account, "SHARED_FOLDERS", (anyone_writes,))

    with pytest.raises(StackError) as raised:
        EmbeddedPostgres(private_folder / "pg", free_port()).start()

    message = str(raised.value)
    assert f"account {SYSTEM_ACCOUNT}, which cannot enter {private_folder.parent}" in message
    assert f"to reach {private_install}" in message
    assert f"{anyone_writes}: others may write to it" in message


@pytest.fixture
def immutable_folder(private_folder: Path) -> Iterator[Path]:
    """A folder even root may not write to (`chattr +i`), as on a read-only file system."""
    folder = private_folder / "immutable"
    folder.mkdir(mode=0o755)
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is refused here: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_says_which_folders_root_cannot_make_or_write_to_and_what_to_do(
    private_folder: Path,
    private_install: Path,
    immutable_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, an OSError from making the first folder escaped, and the second went untried."""
    not_a_folder = private_folder / "a-file"
    not_a_folder.write_text("")
    unmakeable = not_a_folder / "shared"
    monkeypatch.setattr(postgres_account, "SHARED_FOLDERS", (unmakeable, immutable_folder))

    with pytest.raises(StackError) as raised:
        EmbeddedPostgres(private_folder / "pg", free_port()).start()

    message = str(raised.value)
    assert f"account {SYSTEM_ACCOUNT}, which cannot enter {private_folder.parent}" in message
    assert f"{unmakeable}: cannot be made (Not a directory)" in message
    assert f"{immutable_folder}: root may not write to it" in message
    assert f"Make one of {unmakeable}, {immutable_folder} a folder owned by root" in message


@pytest.fixture
def shared_folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The only folder the install may be copied to: one every account may enter."""
    folder = Path(tempfile.mkdtemp(prefix="choreo-shared-"))
    folder.chmod(0o755)
    monkeypatch.setattr(postgres_account, "SHARED_FOLDERS", (folder,))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_says_where_the_install_could_not_be_copied_and_what_to_do(
    private_folder: Path,
    private_install: Path,
    shared_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full_disk(source: Path, destination: Path, **options: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))

    monkeypatch.setattr(shutil, "copytree", full_disk)

    with pytest.raises(StackError) as raised:
        EmbeddedPostgres(private_folder / "pg", free_port()).start()

    message = str(raised.value)
    assert f"cannot copy PostgreSQL's install {private_install} into {shared_folder}" in message
    assert "No space left on device" in message
    assert f"Make room there, move {private_install} to a folder every account" in message
    assert list(shared_folder.iterdir()) == []  # no half-made copy left behind
