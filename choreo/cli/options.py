"""What the inspection commands accept: the shared options (broker, topic prefix, --json), the
broker's TLS and SASL settings, and the parsers of durations, order ids, record types and
dead-letter entry ids."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import typer

from choreo.avro import default_store
from choreo.cli.output import CliError
from choreo.kafka import KafkaSecurity, KafkaSecurityError
from choreo.stack.config import StackPorts

DEFAULT_BOOTSTRAP_SERVERS = f"127.0.0.1:{StackPorts().broker}"
"""Where `choreo up` runs its broker."""

BootstrapOption = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        show_envvar=True,
        metavar="HOST:PORT",
        help="The broker (comma-separated for several); `choreo up`'s by default.",
    ),
]
PrefixOption = Annotated[
    str,
    typer.Option(
        "--topic-prefix",
        envvar="CHOREO_TOPIC_PREFIX",
        show_envvar=True,
        metavar="PREFIX",
        help="Prefix of the physical topic and consumer group names (the services' own).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def kafka_security() -> KafkaSecurity:
    """TLS and SASL to the broker from the variables the services read (KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_*, KAFKA_SSL_*): an operator reaches a secured broker as their own principal."""
    try:
        return KafkaSecurity.from_environment(os.environ)
    except KafkaSecurityError as error:
        raise CliError(f"cannot reach the broker securely: {error}") from None


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `1d`, `1w` or a sum of them (`1h30m`): how far back to look."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise typer.BadParameter(
            f"{text!r} is not a duration: write a number and a unit s, m, h, d or w, "
            "like 10m, 2h, 1d or 1h30m"
        )
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds == 0:
        raise typer.BadParameter(f"{text!r} is no time at all; give a positive duration")
    return timedelta(seconds=seconds)


def parse_order_id(text: str) -> str:
    """An order id is a UUID; returned in its canonical lower-case form."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an order id (a UUID)") from None


def parse_record_type(text: str) -> str:
    """The Avro record name of an event type, whatever its case (`orderCreated`)."""
    names = default_store().record_names()
    by_folded = {name.lower(): name for name in names}
    found = by_folded.get(text.strip().lower())
    if found is None:
        raise typer.BadParameter(f"no event type {text!r}; the types are {', '.join(names)}")
    return found


@dataclass(frozen=True, order=True)
class EntryId:
    """Where a dead letter is: `<dlq topic>:<partition>:<offset>`, stable and unique."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def parse_entry_id(text: str, prefix: str = "") -> EntryId:
    """Parse a dead-letter entry id; the topic gets `prefix` unless it already has it."""
    topic, _, rest = text.strip().partition(":")
    partition, _, offset = rest.partition(":")
    if not (topic and partition.isdigit() and offset.isdigit()):
        raise typer.BadParameter(
            f"{text!r} is not a dead-letter id: write <dlq topic>:<partition>:<offset>, "
            "as `choreo dlq list` prints it"
        )
    physical = physical_topic(topic, prefix)
    if not physical.endswith(".dlq"):
        raise typer.BadParameter(f"{text!r}: {physical} is not a dead-letter topic (*.dlq)")
    return EntryId(physical, int(partition), int(offset))


def physical_topic(name: str, prefix: str) -> str:
    """The broker's name of a topic given with or without the prefix."""
    return name if name.startswith(prefix) else f"{prefix}{name}"
