"""The event pipeline between the services: each outbox's backlog, each service consumer group's
lag (with `choreo topics`' arithmetic) and the dead-letter topics. A backlog or a lag is normal
for a moment; one whose oldest row or record has waited longer than the grace is a violation,
and so is any committed offset beyond the log's end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from choreo.cli.broker import Broker
from choreo.cli.dead_letters import (
    DeadLetter,
    dead_letter_topics,
    expected_outcomes,
    replays,
    scan,
)
from choreo.cli.output import moment
from choreo.cli.topics import SERVICE_SUBSCRIPTIONS, TopicLag, group_lags
from choreo.cli.verify.facts import BROKER, Facts, database, seconds
from choreo.cli.verify.report import CheckResult, Severity

APPLIED = "skip: already applied"
"""What `expected_outcomes` says of an entry whose consumer has applied its event since."""


@dataclass(frozen=True)
class Lags:
    groups: Sequence[TopicLag]
    first_unread: Mapping[tuple[str, str, int], datetime] = field(default_factory=dict)
    """(group, topic, partition) -> when the first record the group has not read was written."""

    @property
    def quiet(self) -> bool:
        return all(lag.lag == 0 and lag.ahead == 0 for lag in self.groups)


@dataclass(frozen=True)
class DeadLetters:
    sizes: Mapping[str, int]
    entries: Sequence[DeadLetter]
    replayed_as: Mapping[str, list[str]]
    outcomes: Mapping[str, str]


async def read_lags(broker: Broker) -> Lags:
    """The lag of each service's consumer group on each topic it reads, and for a partition
    behind, when its first unread record was written. Read without joining any group."""
    prefix = broker.prefix
    beginning, end = await broker.offsets(broker.partitions(*broker.topics()))
    groups: list[TopicLag] = []
    for service, topics in SERVICE_SUBSCRIPTIONS.items():
        group = f"{prefix}{service}"
        read = broker.partitions(*(f"{prefix}{topic}" for topic in topics))
        committed = await broker.committed(group, read)
        groups += group_lags(group, committed, beginning, end, prefix)
    first_unread: dict[tuple[str, str, int], datetime] = {}
    for lag in groups:
        for partition in lag.partitions:
            if not partition.lag:
                continue
            position = max(partition.committed or 0, partition.beginning)
            where = TopicPartition(lag.topic, partition.partition)
            record = await broker.record_at(where, position)
            if record is not None and record.timestamp >= 0:
                written = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                first_unread[(lag.group, lag.topic, partition.partition)] = written
    return Lags(groups, first_unread)


async def read_dead_letters(broker: Broker, database_urls: Mapping[str, str]) -> DeadLetters:
    """Every dead letter, the replays of each, and whether its consumer has applied it since."""
    topics = dead_letter_topics(broker, None)
    entries = await scan(broker, topics, show_progress=True)
    sizes = {topic: sum(1 for e in entries if e.record.topic == topic) for topic in topics}
    replayed_as = await replays(broker, entries)
    return DeadLetters(sizes, entries, replayed_as, await expected_outcomes(entries, database_urls))


def outboxes(facts: Facts) -> CheckResult:
    """Each service's outbox: its backlog, and no row waiting longer than the grace."""
    result = CheckResult("outboxes", "outboxes drained")
    unread = [
        f"{database(s)}: {why}" for s, why in _database_errors(facts) if s not in facts.outboxes
    ]
    if unread:
        result.error = "; ".join(unread)
    waiting = 0
    for service, outbox in sorted(facts.outboxes.items()):
        waiting += outbox.backlog
        result.facts[service] = {
            "backlog": outbox.backlog,
            "oldest_id": outbox.oldest_id,
            "oldest_topic": outbox.oldest_topic,
            "oldest_created_at": outbox.oldest_created_at,
            "oldest_age_seconds": outbox.oldest_age,
        }
        age = outbox.oldest_age
        if age is not None and age > facts.grace.total_seconds():
            result.add(
                f"{service}.outbox:{outbox.oldest_id}",
                f"outbox row for {outbox.oldest_topic} not published",
                f"published within {seconds(facts.grace)}",
                f"waiting {seconds(timedelta(seconds=age))} since "
                f"{moment(outbox.oldest_created_at)}, {outbox.backlog} row(s) in the backlog",
            )
    result.summary = f"{len(facts.outboxes)} outbox(es), {waiting} row(s) waiting"
    return result


def _database_errors(facts: Facts) -> list[tuple[str, str]]:
    suffix = " database"
    return [
        (source.removesuffix(suffix), why)
        for source, why in facts.unavailable.items()
        if source.endswith(suffix)
    ]


def consumer_lag(facts: Facts, lags: Lags | None) -> CheckResult:
    """Each service consumer group's lag: no record unread longer than the grace, and no
    committed offset beyond the end of the log (records written there would be skipped)."""
    result = CheckResult("consumer-lag", "consumer groups caught up")
    if not facts.require(result, BROKER) or lags is None:
        return result
    now = datetime.now(UTC)
    for lag in lags.groups:
        shown = {key: value for key, value in lag.to_json().items() if key != "partitions"}
        result.facts.setdefault(lag.group, []).append(shown)
        for partition in lag.partitions:
            where = f"{lag.group}:{lag.topic}:{partition.partition}"
            if partition.ahead:
                result.add(
                    where,
                    "committed offset beyond the end of the log",
                    f"committed offset at most {partition.end} (the log's end)",
                    f"committed {partition.committed}, ahead of the log by {partition.ahead}",
                )
            written = lags.first_unread.get((lag.group, lag.topic, partition.partition))
            if partition.lag and written is not None and now - written > facts.grace:
                result.add(
                    where,
                    "consumer group stuck behind its topic",
                    f"records read within {seconds(facts.grace)}",
                    f"{partition.lag} unread, the first written {seconds(now - written)} ago",
                )
    total = sum(lag.lag for lag in lags.groups)
    groups = len({lag.group for lag in lags.groups})
    result.summary = f"{groups} group(s), lag {total}"
    return result


def dead_letters(facts: Facts, found: DeadLetters | None) -> CheckResult:
    """Each dead-letter topic's size, and a warning for each entry (failed since --since) that
    was neither replayed nor applied by its consumer since."""
    result = CheckResult("dead-letters", "dead letters settled")
    if not facts.require(result, BROKER) or found is None:
        return result
    result.facts = {"sizes": dict(found.sizes)}
    settled = 0
    for entry in found.entries:
        failed_at = entry.failed_at
        if facts.since is not None and (failed_at is None or failed_at < facts.since):
            continue
        outcome = found.outcomes.get(entry.id, "unknown")
        if outcome == APPLIED or found.replayed_as.get(entry.id):
            settled += 1
            continue
        said = "cannot be read" if outcome.startswith("fail:") else f"a replay would {outcome}"
        result.add(
            entry.id,
            f"dead letter of {entry.consumer or entry.service} never replayed",
            "replayed, or applied by its consumer",
            f"{entry.record.type or '?'} key {entry.record.key}, {said}; "
            f"{entry.error_type}: {entry.error_message}",
            Severity.WARNING,
        )
    total = sum(found.sizes.values())
    result.summary = f"{total} dead letter(s) in {len(found.sizes)} topic(s), {settled} settled"
    return result
