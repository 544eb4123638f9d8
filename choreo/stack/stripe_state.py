"""The Stripe emulator's state on disk: a snapshot of localstripe's whole store, and a journal
of the objects changed since, appended to once a second, so that what each second costs
depends on what changed in it, not on how much the store holds.

localstripe itself pickles its whole store after every POST, PUT and DELETE (to one file for
every instance on the machine): ~120 ms a saga with a 2 MB store (issue 14). A snapshot taken
at most every second and at most 5 % of the time still grew with history: with 9,400 orders
behind it (38,000 objects, 14.8 MB) one took 0.57 s, so the emulator spent 5 % of a core on it
and a SIGKILL lost the last 11 s. Here a second's changes are appended as the objects they
touched (each pickled alone, its references to other stored objects by key); the snapshot is
rewritten only once the journal has grown as large as it, so each change costs the same
amortized whatever the store holds.

Which objects changed: those a mutating request (POST, PUT, DELETE) read from the store, wrote
or deleted, and the stored objects they reference (a PaymentIntent's `latest_charge`, changed
through the intent when it is captured). A SIGKILL loses at most the last second, and what no
request changed (localstripe settles a SEPA debit half a second after its request) until the
next snapshot; a clean stop writes a snapshot.
"""

from __future__ import annotations

import io
import os
import pickle
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATION_KEY = "choreo:snapshot-generation"
"""Where the snapshot keeps its generation: journal batches of another generation (written
before the snapshot that replaced them, not yet deleted when a crash came) are not replayed."""

MIN_SAVE_INTERVAL = 1.0
"""Seconds between two saves while changes come in."""

_MAX_FIXUP_DEPTH = 8


@dataclass(frozen=True)
class _Ref:
    """A stored object named by its key in a journaled object, until the load resolves it."""

    key: str


class StateFile:
    """localstripe's store kept in `path` (the snapshot, a pickled dict of the store) and
    `path`.journal (batches of changed objects). With `path` None, nothing is kept."""

    def __init__(self, path: Path | None, *, is_stored: Callable[[object], bool]) -> None:
        """`is_stored(value)`: whether a value is one of localstripe's objects, which the store
        may hold under its key (`key_of`)."""
        self.path = path
        self.journal = path.with_name(path.name + ".journal") if path is not None else None
        self._is_stored = is_stored
        self._generation = 0
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self.changed: set[str] = set()
        self.snapshots = 0
        self.journaled = 0  # batches appended

    def mark(self, key: str) -> None:
        """The object under `key` was read by a mutating request, written or deleted."""
        if self.path is not None:
            self.changed.add(key)

    def load(self, store: MutableMapping[str, Any]) -> None:
        """Fill `store` with the snapshot, then the journal's batches of its generation in the
        order they were written; a batch cut short by a crash is dropped."""
        if self.path is None or self.journal is None:
            return
        loaded: dict[str, Any] = {}
        if self.path.exists():
            with self.path.open("rb") as source:
                loaded = pickle.load(source)
            self._snapshot_bytes = self.path.stat().st_size
        self._generation = int(loaded.pop(GENERATION_KEY, 0))
        replayed = False
        for generation, records in self._batches():
            if generation != self._generation:
                continue
            for key, payload in records:
                if payload is None:
                    loaded.pop(key, None)
                else:
                    loaded[key] = _Unpickler(io.BytesIO(payload)).load()
                replayed = True
        if replayed:
            _resolve_references(loaded, self._is_stored)
        store.clear()
        store.update(loaded)

    def save(self, store: MutableMapping[str, Any]) -> float:
        """Append what changed since the last save to the journal, or, once the journal is as
        large as the snapshot, write a new snapshot instead; seconds taken. Runs on the event
        loop, so no request changes the store meanwhile."""
        started = time.perf_counter()
        if self.path is None or not self.changed:
            return 0.0
        if self._journal_bytes >= self._snapshot_bytes:
            self.snapshot(store)
        else:
            self._append(store)
        return time.perf_counter() - started

    def snapshot(self, store: MutableMapping[str, Any]) -> None:
        """Write the whole store as the next generation's snapshot, then drop the journal."""
        if self.path is None or self.journal is None:
            return
        self.changed.clear()
        generation = self._generation + 1
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("wb") as target:
            pickle.dump(
                {**store, GENERATION_KEY: generation}, target, protocol=pickle.HIGHEST_PROTOCOL
            )
        os.replace(partial, self.path)  # a crash mid-save never leaves a truncated snapshot
        self._generation = generation
        self._snapshot_bytes = self.path.stat().st_size
        self.journal.unlink(missing_ok=True)  # a crash before this: its batches are ignored
        self._journal_bytes = 0
        self.snapshots += 1

    def _append(self, store: MutableMapping[str, Any]) -> None:
        assert self.journal is not None
        records: list[tuple[str, bytes | None]] = []
        pending, done = list(self.changed), set()
        self.changed.clear()
        while pending:
            key = pending.pop()
            if key in done:
                continue
            done.add(key)
            value = store.get(key)
            if value is None:
                records.append((key, None))
                continue
            buffer = io.BytesIO()
            pickler = _Pickler(buffer, value, store, self._is_stored)
            pickler.dump(value)
            records.append((key, buffer.getvalue()))
            pending.extend(pickler.referenced - done)
        batch = pickle.dumps((self._generation, records), protocol=pickle.HIGHEST_PROTOCOL)
        with self.journal.open("ab") as target:
            target.write(batch)
        self._journal_bytes += len(batch)
        self.journaled += 1

    def _batches(self) -> Iterator[tuple[int, list[tuple[str, bytes | None]]]]:
        if self.journal is None or not self.journal.exists():
            return
        self._journal_bytes = self.journal.stat().st_size
        with self.journal.open("rb") as source:
            while True:
                try:
                    yield pickle.load(source)
                except EOFError:
                    return
                except (pickle.UnpicklingError, ValueError, IndexError):
                    return  # the last batch, cut short by a crash


def key_of(value: Any) -> str | None:
    """The key localstripe stores an object under: `<object>:<id>`, or `<object>` for a
    singleton (the balance)."""
    kind = getattr(value, "object", None)
    if not isinstance(kind, str):
        return None
    identifier = getattr(value, "id", None)
    return f"{kind}:{identifier}" if isinstance(identifier, str) else kind


class _Pickler(pickle.Pickler):
    """Pickles one stored object alone: any other stored object it holds is written as its key
    (pickle's persistent ids) and noted in `referenced`."""

    def __init__(
        self,
        target: io.BytesIO,
        root: object,
        store: MutableMapping[str, Any],
        is_stored: Callable[[object], bool],
    ) -> None:
        super().__init__(target, protocol=pickle.HIGHEST_PROTOCOL)
        self._root = root
        self._store = store
        self._is_stored = is_stored
        self.referenced: set[str] = set()

    def persistent_id(self, obj: Any) -> str | None:
        if obj is self._root or not self._is_stored(obj):
            return None
        key = key_of(obj)
        if key is None or self._store.get(key) is not obj:
            return None  # an object of localstripe's kept inside another, not stored alone
        self.referenced.add(key)
        return key


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> _Ref:
        return _Ref(str(pid))


def _resolve_references(
    store: MutableMapping[str, Any], is_stored: Callable[[object], bool]
) -> None:
    """Point every reference between stored objects at the object now stored under its key:
    the journal's references by key, and the snapshot's references to an object the journal
    replaced since (an intent's `latest_charge` when only the charge changed)."""

    def resolved(item: Any, depth: int) -> Any:
        """What to keep in place of `item`: the object stored under its key, if it is one."""
        if isinstance(item, _Ref):
            return store.get(item.key)
        if is_stored(item):
            key = key_of(item)
            if key is not None and key in store:
                return store[key]
        if isinstance(item, tuple) and depth < _MAX_FIXUP_DEPTH:
            parts = [resolved(part, depth + 1) for part in item]
            if all(new is old for new, old in zip(parts, item, strict=True)):
                return item
            return type(item)(*parts) if hasattr(item, "_fields") else tuple(parts)
        fix(item, depth + 1)  # a container, or an object kept inside another
        return item

    def fix(value: Any, depth: int) -> None:
        if depth > _MAX_FIXUP_DEPTH:
            return
        if isinstance(value, dict):
            for name, item in value.items():
                value[name] = resolved(item, depth)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = resolved(item, depth)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            fix(vars(value), depth + 1)

    for stored in list(store.values()):
        if hasattr(stored, "__dict__"):
            fix(vars(stored), 0)
