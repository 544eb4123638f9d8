"""The schema store and the single-object codec every event value on the wire goes through."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from choreo.errors import NotRetriableError

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"

Schema = dict[str, Any]
"""A parsed Avro schema of a record, as fastavro returns it."""

MAGIC = b"\xc3\x01"
"""The two bytes that open every single-object encoded value (Avro specification)."""

_HEADER_LENGTH = len(MAGIC) + 8
_FILE_NAME = re.compile(r"(?P<record>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc")
_CRC64_EMPTY = 0xC15D213AA4D7A795


class AvroError(NotRetriableError):
    """A value cannot be encoded or decoded with the stored schemas; trying again cannot help."""


class UnknownSchemaError(AvroError):
    """The fingerprint or record name is not in the schema store."""


class UndecodableError(AvroError):
    """The bytes are not a single-object encoded value of the schema they name."""


class IncompatibleSchemaError(AvroError):
    """Data written with one schema cannot be read with the other."""


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ (_CRC64_EMPTY if value & 1 else 0)
        table.append(value)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) of `data`, as the Avro specification's "Schema Fingerprints" has it."""
    value = _CRC64_EMPTY
    for byte in data:
        value = (value >> 8) ^ _CRC64_TABLE[(value ^ byte) & 0xFF]
    return value


def fingerprint(schema: Schema | list[Any] | str) -> bytes:
    """The 8-byte fingerprint that single-object encoding puts after the magic bytes.

    CRC-64-AVRO of the schema's Parsing Canonical Form, little-endian: the byte order of the
    Java implementation, which the specification's single-object encoding follows.
    """
    canonical = to_parsing_canonical_form(schema)
    return crc64_avro(canonical.encode()).to_bytes(8, "little")


class SchemaStore:
    """Every version of every event record, found by record name or by writer fingerprint."""

    def __init__(self, schemas: Mapping[str, Mapping[int, Schema]]) -> None:
        self._schemas: dict[str, dict[int, Schema]] = {
            name: {version: _parse_record(versions[version]) for version in sorted(versions)}
            for name, versions in sorted(schemas.items())
        }
        self._fingerprints = {
            (name, version): fingerprint(schema)
            for name, versions in self._schemas.items()
            for version, schema in versions.items()
        }
        self._by_fingerprint: dict[bytes, tuple[str, int]] = {}
        for key, value in self._fingerprints.items():
            # Versions that differ only in docs share a fingerprint; the oldest one stands for all.
            self._by_fingerprint.setdefault(value, key)

    @classmethod
    def from_directory(cls, path: Path = SCHEMA_DIR) -> SchemaStore:
        """Load `<RecordName>.v<N>.avsc` files; AvroError names every file that is wrong."""
        schemas, problems = load_schema_files(path)
        if problems:
            raise AvroError(f"cannot load the schemas in {path}: " + "; ".join(problems))
        return cls(schemas)

    def record_names(self) -> list[str]:
        return list(self._schemas)

    def versions(self, record_name: str) -> list[int]:
        return list(self._versions_of(record_name))

    def schema(self, record_name: str, version: int | None = None) -> Schema:
        """The parsed schema of one version of a record, the latest when `version` is None."""
        return self._schemas[record_name][self._version(record_name, version)]

    def encode(
        self, record_name: str, datum: Mapping[str, Any], version: int | None = None
    ) -> bytes:
        """Single-object encoding of `datum`: magic bytes, writer fingerprint, Avro binary body."""
        version = self._version(record_name, version)
        schema = self._schemas[record_name][version]
        try:
            validate(datum, schema, raise_errors=True)
        except ValidationError as error:
            namespace = schema["name"].rpartition(".")[0]
            # fastavro reports a value that fits no branch of a union once per branch.
            expected: dict[tuple[str, str], list[str]] = {}
            for problem in error.errors:
                where = (problem.field.removeprefix(namespace + "."), repr(problem.datum))
                expected.setdefault(where, []).append(_expected(problem.schema))
            mismatches = [
                f"{field} cannot be {value} (expected {' or '.join(kinds)})"
                for (field, value), kinds in expected.items()
            ]
            raise AvroError(f"invalid {record_name} v{version}: {'; '.join(mismatches)}") from error
        names = schema.get("__named_schemas", {})
        if mismatches := list(_malformed_uuids(schema, datum, record_name, names)):
            raise AvroError(f"invalid {record_name} v{version}: {'; '.join(mismatches)}")
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(self._fingerprints[record_name, version])
        fastavro.schemaless_writer(buffer, schema, datum)
        return buffer.getvalue()

    def decode(
        self, payload: bytes, reader_version: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The record name and datum of a single-object encoded value.

        The writer schema is found by fingerprint among every stored version of every record; the
        datum is read with `reader_version` of the same record, the latest when it is None.
        """
        if len(payload) < _HEADER_LENGTH or payload[: len(MAGIC)] != MAGIC:
            raise UndecodableError(
                f"not an Avro single-object encoded value: expected {MAGIC.hex()} and an 8-byte "
                f"fingerprint, got {payload[:_HEADER_LENGTH].hex() or 'no bytes'}"
            )
        writer_fingerprint = payload[len(MAGIC) : _HEADER_LENGTH]
        found = self._by_fingerprint.get(writer_fingerprint)
        if found is None:
            raise UnknownSchemaError(
                f"no stored schema has fingerprint {writer_fingerprint.hex()}: the producer uses a "
                "schema version this consumer does not have"
            )
        record_name, writer_version = found
        reader_version = self._version(record_name, reader_version)
        writer = self._schemas[record_name][writer_version]
        reader = self._schemas[record_name][reader_version]
        body = io.BytesIO(payload[_HEADER_LENGTH:])
        try:
            datum = fastavro.schemaless_reader(body, writer, reader)
        except SchemaResolutionError as error:
            raise IncompatibleSchemaError(
                f"{record_name} v{reader_version} cannot read v{writer_version}: {error}"
            ) from error
        except Exception as error:
            # Whatever fastavro raises on bytes that do not fit the schema (EOFError,
            # ValueError, struct.error, MemoryError for a forged length...), it is this.
            raise UndecodableError(
                f"{record_name} v{writer_version} body does not decode: {error}"
            ) from error
        trailing = len(payload) - _HEADER_LENGTH - body.tell()
        if trailing:
            raise UndecodableError(
                f"{record_name} v{writer_version} body has {trailing} bytes after the record"
            )
        if not isinstance(datum, dict):
            raise UndecodableError(f"{record_name} v{writer_version} is not a record schema")
        return record_name, datum

    def _versions_of(self, record_name: str) -> dict[int, Schema]:
        versions = self._schemas.get(record_name)
        if versions is None:
            raise UnknownSchemaError(
                f"no record named {record_name!r} in the schema store; "
                f"known: {', '.join(self._schemas) or 'none'}"
            )
        return versions

    def _version(self, record_name: str, version: int | None) -> int:
        versions = self._versions_of(record_name)
        if version is None:
            return max(versions)
        if version not in versions:
            raise UnknownSchemaError(
                f"{record_name} has no version {version}; stored: "
                + ", ".join(f"v{stored}" for stored in versions)
            )
        return version


def _parse_record(schema: Schema) -> Schema:
    parsed = fastavro.parse_schema(schema)
    if not isinstance(parsed, dict) or parsed["type"] != "record":
        raise AvroError(f"the store holds records only, not {parsed!r}")
    return parsed


@cache
def default_store() -> SchemaStore:
    """The store of the repository's schemas/ directory, loaded once."""
    return SchemaStore.from_directory(SCHEMA_DIR)


def load_schema_files(directory: Path) -> tuple[dict[str, dict[int, Schema]], list[str]]:
    """Parse every schema file of `directory`, by record name and version, and what is wrong."""
    if not directory.is_dir():
        return {}, [f"{directory} is not a directory"]
    schemas: dict[str, dict[int, Schema]] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.avsc")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            problems.append(f"{path.name}: name the file <RecordName>.v<N>.avsc, N from 1")
            continue
        try:
            schema = fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, SchemaParseException) as error:
            problems.append(f"{path.name}: not a valid Avro schema: {error}")
            continue
        if not isinstance(schema, dict) or schema["type"] != "record":
            problems.append(f"{path.name}: the top-level type must be a record")
            continue
        record_name = schema["name"].rpartition(".")[2]
        if record_name != match["record"]:
            problems.append(f"{path.name}: defines record {record_name!r}, not {match['record']!r}")
            continue
        schemas.setdefault(record_name, {})[int(match["version"])] = schema
    for record_name, versions in sorted(schemas.items()):
        if sorted(versions) != list(range(1, len(versions) + 1)):
            found = ", ".join(f"v{version}" for version in sorted(versions))
            problems.append(f"{record_name}: versions must run 1..N without gaps; found {found}")
    if not schemas and not problems:
        problems.append(f"{directory} holds no .avsc schema files")
    return schemas, problems


def _expected(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_expected(branch) for branch in schema)
    if isinstance(schema, str):
        return schema.rpartition(".")[2]
    if "name" in schema:
        return f"{schema['type']} {_expected(schema['name'])}"
    return str(schema.get("logicalType") or schema["type"])


def _malformed_uuids(schema: Any, datum: Any, path: str, names: Mapping[str, Any]) -> Iterator[str]:
    """Strings that are not UUIDs in `uuid` fields, which fastavro would write as given.

    Every reader decodes such fields with uuid.UUID, so a malformed id would poison the topic.
    """
    if isinstance(schema, str):
        schema = names.get(schema)
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        if datum is not None and len(branches) == 1:
            yield from _malformed_uuids(branches[0], datum, path, names)
    elif not isinstance(schema, dict):
        return
    elif schema["type"] == "record" and isinstance(datum, Mapping):
        for field in schema["fields"]:
            value = datum.get(field["name"])
            yield from _malformed_uuids(field["type"], value, f"{path}.{field['name']}", names)
    elif schema["type"] == "array" and isinstance(datum, list | tuple):
        for index, item in enumerate(datum):
            yield from _malformed_uuids(schema["items"], item, f"{path}[{index}]", names)
    elif schema["type"] == "map" and isinstance(datum, Mapping):
        for key, value in datum.items():
            yield from _malformed_uuids(schema["values"], value, f"{path}[{key!r}]", names)
    elif schema.get("logicalType") == "uuid" and isinstance(datum, str):
        try:
            uuid.UUID(datum)
        except ValueError:
            yield f"{path} cannot be {datum!r} (expected uuid)"
