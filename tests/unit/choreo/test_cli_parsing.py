"""What the inspection commands accept: durations, order ids, event types, dead-letter ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner

from choreo.cli import app
from choreo.cli.options import (
    EntryId,
    parse_duration,
    parse_entry_id,
    parse_order_id,
    parse_record_type,
    physical_topic,
)

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "ten minutes", "-5m", "1.5h", "5y", "0s"])
def test_what_is_not_a_duration_is_refused_with_the_accepted_form(text: str) -> None:
    with pytest.raises(typer.BadParameter, match=r"duration|no time"):
        parse_duration(text)


def test_an_order_id_is_a_uuid_in_canonical_form() -> None:
    assert (
        parse_order_id(" 6F9619FF-8B86-D011-B42D-00C04FC964FF ")
        == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    )
    with pytest.raises(typer.BadParameter, match="not an order id"):
        parse_order_id("order-42")


def test_event_types_match_whatever_their_case_and_unknown_ones_list_the_known() -> None:
    assert parse_record_type("ordercreated") == "OrderCreated"
    assert parse_record_type("StockRejected") == "StockRejected"
    with pytest.raises(typer.BadParameter, match="OrderCancelled") as refused:
        parse_record_type("OrderCreatd")
    assert "OrderCreatd" in str(refused.value)


def test_entry_ids_name_topic_partition_and_offset_and_get_the_prefix() -> None:
    assert parse_entry_id("inventory.dlq:2:17") == EntryId("inventory.dlq", 2, 17)
    assert parse_entry_id("inventory.dlq:2:17", "t1.") == EntryId("t1.inventory.dlq", 2, 17)
    assert parse_entry_id("t1.inventory.dlq:0:0", "t1.") == EntryId("t1.inventory.dlq", 0, 0)
    assert str(EntryId("t1.inventory.dlq", 2, 17)) == "t1.inventory.dlq:2:17"


@pytest.mark.parametrize(
    "text", ["inventory.dlq", "inventory.dlq:2", "inventory.dlq:x:1", ":1:2", "inventory.dlq:1:-2"]
)
def test_malformed_entry_ids_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="not a dead-letter id"):
        parse_entry_id(text)


def test_an_entry_id_must_point_into_a_dead_letter_topic() -> None:
    with pytest.raises(typer.BadParameter, match=r"order\.create is not a dead-letter topic"):
        parse_entry_id("order.create:0:1")


def test_topics_get_the_prefix_once() -> None:
    assert physical_topic("order.create", "t1.") == "t1.order.create"
    assert physical_topic("t1.order.create", "t1.") == "t1.order.create"
    assert physical_topic("order.create", "") == "order.create"


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["tail", "order.create", "--since", "soon"], "is not a duration"),
        (["tail", "order.create", "--type", "Nope"], "no event type 'Nope'"),
        (["tail", "order.create", "--limit", "0"], "--limit"),
        (["saga", "not-a-uuid"], "is not an order id"),
        (["dlq", "show", "inventory.dlq:x:1"], "not a dead-letter id"),
        (["dlq", "replay"], "give entry ids or --all"),
        (["dlq", "replay", "inventory.dlq:0:1", "--all"], "give entry ids or --all"),
        (["dlq", "replay", "inventory.dlq:0:1", "--topic", "inventory"], "--topic goes with --all"),
        (["dlq", "list", "--since", "yesterday"], "is not a duration"),
    ],
)
def test_usage_errors_exit_2_before_any_connection(arguments: list[str], complaint: str) -> None:
    # An address nothing listens on: a usage error must be found before connecting.
    result = runner.invoke(app, [*arguments, "--bootstrap-servers", "127.0.0.1:1"])

    assert result.exit_code == 2, result.output
    assert complaint in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("arguments", "command"),
    [
        (["--bogus"], "choreo"),
        (["nope"], "choreo"),
        (["tail", "order.create", "--bogus"], "choreo tail"),
        (["tail", "order.create", "--limit", "many"], "choreo tail"),
        (["dlq", "show", "inventory.dlq:x:1"], "choreo dlq show"),
        (["migrate", "nope"], "choreo migrate"),
    ],
)
def test_a_usage_error_is_one_line_that_points_to_the_help(
    arguments: list[str], command: str
) -> None:
    result = runner.invoke(app, arguments)

    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()  # no usage, no box: the line the other errors use
    assert line.startswith("error: ")
    assert line.endswith(f"(see '{command} --help')")


COMMANDS = [
    [],
    ["up"],
    ["migrate"],
    ["topics"],
    ["tail"],
    ["saga"],
    ["verify"],
    ["bench"],
    ["event-keys"],
    ["schemas"],
    ["schemas", "check"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "replay"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "choreo")
def test_help_shows_no_type_for_flags_or_named_arguments(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])

    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "<str>" not in result.output  # `TOPIC`, `ORDER_ID`, `ID` name what they take


def test_migrate_listens_on_nothing() -> None:
    help_text = runner.invoke(app, ["migrate", "--help"]).output
    assert "Listen on" not in help_text
    assert "postgres" in help_text
