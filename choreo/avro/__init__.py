"""Avro for events on the wire: the schema store, single-object encoding, evolution checks."""

from choreo.avro.codec import (
    SCHEMA_DIR,
    AvroError,
    IncompatibleSchemaError,
    SchemaStore,
    UndecodableError,
    UnknownSchemaError,
    default_store,
    fingerprint,
)
from choreo.avro.compat import check_store, compatibility_problems

__all__ = [
    "SCHEMA_DIR",
    "AvroError",
    "IncompatibleSchemaError",
    "SchemaStore",
    "UndecodableError",
    "UnknownSchemaError",
    "check_store",
    "compatibility_problems",
    "default_store",
    "fingerprint",
]
