"""Avro schema resolution as a static check: can data written with one schema be read with another?

The rules are the specification's "Schema Resolution" ones, matched the way fastavro applies them
when it reads, so a schema this check accepts is one every consumer can decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from choreo.avro.codec import SCHEMA_DIR, load_schema_files

_NAMED = frozenset({"record", "enum", "fixed"})
_PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def compatibility_problems(
    writer: Any,
    reader: Any,
    *,
    writer_label: str = "the writer",
    reader_label: str = "the reader",
) -> list[str]:
    """Why data written with `writer` cannot be read with `reader`; empty when it can.

    Both schemas may be raw (as in an .avsc file) or parsed by fastavro. The labels name the two
    schemas in the messages, e.g. "v1" and "v2".
    """
    writer_names: dict[str, Any] = {}
    reader_names: dict[str, Any] = {}
    resolution = _Resolution(writer_names, reader_names, writer_label, reader_label)
    resolution.resolve(
        fastavro.parse_schema(writer, writer_names),
        fastavro.parse_schema(reader, reader_names),
        path="",
    )
    return resolution.problems


def check_store(path: Path = SCHEMA_DIR) -> list[str]:
    """Everything wrong with a schema directory; empty when all is well.

    Every file parses and is named after its record and version, versions run 1..N, and every
    version is backward and forward compatible with each earlier version of its record.
    """
    schemas, problems = load_schema_files(path)
    for record_name, versions in schemas.items():
        ordered = sorted(versions)
        for position, newer in enumerate(ordered):
            for older in ordered[:position]:
                for writer, reader in ((older, newer), (newer, older)):
                    problems.extend(
                        f"{record_name} v{reader} cannot read v{writer}: {problem}"
                        for problem in compatibility_problems(
                            versions[writer],
                            versions[reader],
                            writer_label=f"v{writer}",
                            reader_label=f"v{reader}",
                        )
                    )
    return problems


@dataclass
class _Resolution:
    writer_names: dict[str, Any]
    reader_names: dict[str, Any]
    writer_label: str
    reader_label: str
    problems: list[str] = field(default_factory=list)
    _resolved_records: set[tuple[str, str]] = field(default_factory=set)

    def resolve(self, writer: Any, reader: Any, path: str) -> None:
        writer, reader = self._writer_type(writer), self._reader_type(reader)
        if isinstance(writer, list):
            # Every branch the writer may have chosen must be readable.
            for branch in map(self._writer_type, writer):
                target = self._readable_as(branch, reader)
                if target is None:
                    self._report(
                        path,
                        f"changed type {_describe(writer)} -> {_describe(reader)}, but "
                        f"{self.writer_label} may write {_describe(branch)}",
                    )
                else:
                    self._resolve_matching(branch, target, path)
            return
        if not isinstance(reader, list):
            mismatch = _mismatch(writer, reader)
            if mismatch is None:
                self._resolve_matching(writer, reader, path)
            else:
                self._report(path, mismatch)
            return
        target = self._readable_as(writer, reader)
        if target is None:
            self._report(path, f"changed type {_describe(writer)} -> {_describe(reader)}")
        else:
            self._resolve_matching(writer, target, path)

    def _readable_as(self, writer: Any, reader: Any) -> Any:
        """The reader schema that reads a non-union `writer`: for a union, its first match."""
        if isinstance(reader, list):
            branches = map(self._reader_type, reader)
            return next((branch for branch in branches if _mismatch(writer, branch) is None), None)
        return reader if _mismatch(writer, reader) is None else None

    def _writer_type(self, schema: Any) -> Any:
        return self.writer_names.get(schema, schema) if isinstance(schema, str) else schema

    def _reader_type(self, schema: Any) -> Any:
        return self.reader_names.get(schema, schema) if isinstance(schema, str) else schema

    def _resolve_matching(self, writer: Any, reader: Any, path: str) -> None:
        """Resolve the insides of two schemas whose kinds and names already match."""
        writer_logical, reader_logical = _logical_type(writer), _logical_type(reader)
        if writer_logical != reader_logical:
            self._report(
                path,
                f"changed logical type {writer_logical or 'none'} -> {reader_logical or 'none'}",
            )
        elif writer_logical == "decimal":
            for attribute in ("precision", "scale"):
                if writer.get(attribute, 0) != reader.get(attribute, 0):
                    self._report(path, f"changed decimal {attribute}")
        kind = _kind(writer)
        if kind == "record":
            self._resolve_record(writer, reader, path)
        elif kind == "enum":
            missing = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
            if missing and "default" not in reader:
                self._report(
                    path,
                    f"{self.reader_label} lacks enum symbols {', '.join(missing)} of "
                    f"{self.writer_label} and has no enum default",
                )
        elif kind == "array":
            self.resolve(writer["items"], reader["items"], f"{path}[]")
        elif kind == "map":
            self.resolve(writer["values"], reader["values"], f"{path}{{}}")

    def _resolve_record(self, writer: Any, reader: Any, path: str) -> None:
        pair = (writer["name"], reader["name"])
        if pair in self._resolved_records:  # recursive types resolve once
            return
        self._resolved_records.add(pair)
        written = {written_field["name"]: written_field for written_field in writer["fields"]}
        for reader_field in reader["fields"]:
            field_path = f"{path}.{reader_field['name']}" if path else reader_field["name"]
            names = [reader_field["name"], *reader_field.get("aliases", [])]
            writer_field = next((written[name] for name in names if name in written), None)
            if writer_field is not None:
                self.resolve(writer_field["type"], reader_field["type"], field_path)
            elif "default" not in reader_field:
                self.problems.append(
                    f"field '{field_path}' is not in {self.writer_label} "
                    f"and has no default in {self.reader_label}"
                )

    def _report(self, path: str, problem: str) -> None:
        where = f"field '{path}'" if path else "the top-level schema"
        self.problems.append(f"{where} {problem}")


def _mismatch(writer: Any, reader: Any) -> str | None:
    """Why `reader` cannot read `writer` at all; None when their insides decide."""
    writer_kind, reader_kind = _kind(writer), _kind(reader)
    if writer_kind != reader_kind and reader_kind not in _PROMOTIONS.get(writer_kind, ()):
        return f"changed type {_describe(writer)} -> {_describe(reader)}"
    if writer_kind in _NAMED and not _names_match(writer, reader):
        return (
            f"renamed {writer_kind} {_short(writer['name'])} -> {_short(reader['name'])} "
            "without keeping the old name in its aliases"
        )
    if writer_kind == "fixed" and writer["size"] != reader["size"]:
        return f"changed fixed size {writer['size']} -> {reader['size']}"
    return None


def _names_match(writer: Any, reader: Any) -> bool:
    aliases = reader.get("aliases", [])
    writer_name = _short(writer["name"])
    return writer_name in (_short(reader["name"]), *aliases) or writer["name"] in aliases


def _kind(schema: Any) -> str:
    kind = schema["type"] if isinstance(schema, dict) else schema
    return "record" if kind == "error" else str(kind)


def _logical_type(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe(branch) for branch in schema) + "]"
    if isinstance(schema, str):
        return _short(schema)
    kind = _kind(schema)
    if kind in _NAMED:
        return f"{kind} {_short(schema['name'])}"
    if kind == "array":
        return f"array<{_describe(schema['items'])}>"
    if kind == "map":
        return f"map<{_describe(schema['values'])}>"
    return kind
