"""`choreo topics`: every topic with its partitions and end offsets, and how far each consumer
group is behind on each topic it reads (its lag)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from aiokafka import TopicPartition
from rich.table import Table
from rich.text import Text

from choreo import kafka
from choreo.cli.broker import Broker
from choreo.cli.options import (
    DEFAULT_BOOTSTRAP_SERVERS,
    BootstrapOption,
    JsonOption,
    PrefixOption,
    kafka_security,
)
from choreo.cli.output import console, echo_json, error_console, prose, run
from choreo.events import SYSTEM_TOPICS

# The logical topics each service's consumer group reads (DESIGN.md §3). A group is shown on
# these even before it commits anything, so a service that never caught up shows its lag.
SERVICE_SUBSCRIPTIONS: Mapping[str, tuple[str, ...]] = {
    "order_service": ("stock.updated", "payment.event", "order.retry"),
    "payment_service": ("order.create", "stock.updated", "order.event", "payment.retry"),
    "inventory_service": ("order.create", "payment.event", "order.event", "inventory.retry"),
    "notification_service": (
        "user.event",
        "order.create",
        "stock.updated",
        "payment.event",
        "order.event",
        "notification.retry",
    ),
}


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None
    beginning: int
    end: int

    @property
    def lag(self) -> int:
        """Records the group has yet to read; from the beginning when it committed none."""
        read_up_to = self.beginning if self.committed is None else self.committed
        return max(self.end - max(read_up_to, self.beginning), 0)

    @property
    def ahead(self) -> int:
        """How far the committed offset is beyond the log's end: never right. The log was
        restarted, truncated or re-created under the group (a broker that came back empty),
        and records landing below that offset would be skipped by a consumer that trusts it."""
        return max((self.committed or 0) - self.end, 0)


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def ahead(self) -> int:
        return sum(p.ahead for p in self.partitions)

    @property
    def committed(self) -> int | None:
        offsets = [p.committed for p in self.partitions if p.committed is not None]
        return sum(offsets) if offsets else None

    @property
    def end(self) -> int:
        return sum(p.end for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "committed": self.committed,
            "end_offset": self.end,
            "lag": self.lag,
            "ahead_of_log": self.ahead,
            "partitions": [
                {
                    "partition": p.partition,
                    "committed": p.committed,
                    "end_offset": p.end,
                    "lag": p.lag,
                    "ahead_of_log": p.ahead,
                }
                for p in self.partitions
            ],
        }


def group_lags(
    group: str,
    committed: Mapping[TopicPartition, int | None],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    prefix: str,
) -> list[TopicLag]:
    """The lag of `group` on each topic it has committed on or, for a service's own group, is
    known to read."""
    topics = {tp.topic for tp, offset in committed.items() if offset is not None}
    service = group.removeprefix(prefix) if group.startswith(prefix) else None
    known = {f"{prefix}{topic}" for topic in SERVICE_SUBSCRIPTIONS.get(service or "", ())}
    topics |= known & {tp.topic for tp in end}
    lags = []
    for topic in sorted(topics):
        partitions = sorted((tp for tp in end if tp.topic == topic), key=lambda tp: tp.partition)
        lags.append(
            TopicLag(
                group,
                topic,
                tuple(
                    PartitionLag(tp.partition, committed.get(tp), beginning.get(tp, 0), end[tp])
                    for tp in partitions
                ),
            )
        )
    return lags


def register(app: typer.Typer) -> None:
    app.command(help=prose(topics.__doc__))(topics)


def topics(
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    create: Annotated[
        bool,
        typer.Option(
            "--create",
            help="First create the system's topics that are missing (its event, dead-letter and "
            "retry topics, under the prefix), as `choreo up` does; existing ones are left as "
            "they are.",
        ),
    ] = False,
    partitions: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Partitions of each topic --create makes."),
    ] = 6,
    replication_factor: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Replicas of each topic --create makes (at most the brokers)."
        ),
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """List every topic with its partitions and end offsets, and each consumer group's
    committed offsets and lag per topic.

    Lag is the end offset minus the group's committed offset, summed over partitions; a group
    that committed nothing on a partition lags by every record it holds. The groups are those
    the broker lists plus the services' own (<prefix><service>_service), shown on the topics
    they read even before they commit. Offsets are read without joining any group: nothing
    running is disturbed.

    With --create, the missing topics are made first (a deployment's one-shot set-up job: the
    services create no topics themselves) and named on stderr.
    """
    if create:
        names = [f"{topic_prefix}{name}" for name in SYSTEM_TOPICS]
        made = run(
            kafka.ensure_topics(
                bootstrap_servers,
                names,
                partitions=partitions,
                replication_factor=replication_factor,
                security=kafka_security(),
            )
        )
        error_console().print(f"created {', '.join(made)}" if made else "every topic exists")
    report = run(_report(bootstrap_servers, topic_prefix))
    if as_json:
        echo_json(report)
        return
    _print(report)


async def _report(bootstrap_servers: str, prefix: str) -> dict[str, Any]:
    async with Broker(bootstrap_servers, prefix) as broker:
        names = broker.topics()
        partitions = broker.partitions(*names)
        beginning, end = await broker.offsets(partitions)
        listed = await broker.consumer_groups()
        services = {f"{prefix}{service}" for service in SERVICE_SUBSCRIPTIONS}
        groups = sorted(services | set(listed or ()))
        lags: list[TopicLag] = []
        for group in groups:
            committed = await broker.committed(group, partitions)
            lags += group_lags(group, committed, beginning, end, prefix)
    return {
        "bootstrap_servers": bootstrap_servers,
        "topic_prefix": prefix,
        "topics": [_topic_json(name, beginning, end) for name in names],
        "groups_listed_by_broker": listed is not None,
        "groups": [
            {
                "group": group,
                "listed_by_broker": group in (listed or ()),
                "topics": [lag.to_json() for lag in lags if lag.group == group],
            }
            for group in groups
        ],
    }


def _topic_json(
    name: str, beginning: Mapping[TopicPartition, int], end: Mapping[TopicPartition, int]
) -> dict[str, Any]:
    partitions = sorted((tp for tp in end if tp.topic == name), key=lambda tp: tp.partition)
    return {
        "topic": name,
        "partitions": len(partitions),
        "end_offset": sum(end[tp] for tp in partitions),
        "records": sum(end[tp] - beginning.get(tp, 0) for tp in partitions),
        "end_offsets": [{"partition": tp.partition, "end_offset": end[tp]} for tp in partitions],
    }


def _print(report: dict[str, Any]) -> None:
    out = console()
    topics_found: Sequence[dict[str, Any]] = report["topics"]
    if not topics_found:
        where = f" under prefix {report['topic_prefix']!r}" if report["topic_prefix"] else ""
        error_console().print(f"no topics on {report['bootstrap_servers']}{where}")
        return
    table = Table(title=f"Topics on {report['bootstrap_servers']}", title_justify="left")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("records", justify="right")
    table.add_column("end offset", justify="right")
    for topic in topics_found:
        table.add_row(
            topic["topic"],
            str(topic["partitions"]),
            str(topic["records"]),
            str(topic["end_offset"]),
        )
    out.print(table)
    groups = Table(title="Consumer groups", title_justify="left")
    groups.add_column("group")
    groups.add_column("topic")
    groups.add_column("committed", justify="right")
    groups.add_column("end offset", justify="right")
    groups.add_column("lag", justify="right")
    for group in report["groups"]:
        if not group["topics"]:
            groups.add_row(group["group"], Text("(no committed offsets)", style="dim"), "", "", "")
        for lag in group["topics"]:
            committed = "-" if lag["committed"] is None else str(lag["committed"])
            shown = Text(str(lag["lag"]), style="bold red" if lag["lag"] else "green")
            if lag["ahead_of_log"]:
                shown = Text(f"{lag['lag']}, ahead of the log by {lag['ahead_of_log']}", "bold red")
            groups.add_row(group["group"], lag["topic"], committed, str(lag["end_offset"]), shown)
    if not report["groups_listed_by_broker"]:
        error_console().print("the broker did not list its consumer groups")
    if report["groups"]:
        out.print(groups)
    else:
        out.print("no consumer groups")
