"""`choreo schemas check`: passes on the repository's schemas, names the field that breaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from choreo.avro import SCHEMA_DIR
from choreo.cli import app
from choreo.records import RECORDS

runner = CliRunner()


def order_created_v1() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / "OrderCreated.v1.avsc").read_text())
    return loaded


def store_with_v2(directory: Path, v2: dict[str, Any]) -> Path:
    shutil.copy(SCHEMA_DIR / "OrderCreated.v1.avsc", directory)
    (directory / "OrderCreated.v2.avsc").write_text(json.dumps(v2, indent=2))
    return directory


def without_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {**schema, "fields": [field for field in schema["fields"] if field["name"] != name]}


def with_field(schema: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    fields = [new if field["name"] == new["name"] else field for field in schema["fields"]]
    if new not in fields:
        fields.append(new)
    return {**schema, "fields": fields}


def test_the_repository_schemas_pass() -> None:
    result = runner.invoke(app, ["schemas", "check"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.split() == ["OrderCreated", "v1,", "v2", "ok"] for line in lines)
    # One line per record class the services publish, each schema stored.
    assert len([line for line in lines if line.endswith(" ok")]) == len(RECORDS)
    assert f"{len(RECORDS)} records" in lines[-1]


def test_json_output_lists_records_and_no_problems() -> None:
    result = runner.invoke(app, ["schemas", "check", "--json"])

    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["records"]["UserUpdated"] == [1]
    assert sorted(report["records"]) == sorted(RECORDS)


def test_a_compatible_v2_passes(tmp_path: Path) -> None:
    channel = {"name": "channel", "type": "string", "default": "web"}
    directory = store_with_v2(tmp_path, with_field(order_created_v1(), channel))

    result = runner.invoke(app, ["schemas", "check", "--dir", str(directory)])

    assert result.exit_code == 0, result.output
    assert "OrderCreated  v1, v2  ok" in result.stdout


@pytest.mark.parametrize(
    ("make_v2", "problem"),
    [
        pytest.param(
            lambda v1: without_field(v1, "currency"),
            "OrderCreated v1 cannot read v2: field 'currency' is not in v2 "
            "and has no default in v1",
            id="removes-a-field-without-default",
        ),
        pytest.param(
            lambda v1: with_field(v1, {"name": "total_amount", "type": "string"}),
            "OrderCreated v2 cannot read v1: field 'total_amount' changed type long -> string",
            id="changes-a-fields-type",
        ),
        pytest.param(
            lambda v1: with_field(v1, {"name": "gift_note", "type": "string"}),
            "OrderCreated v2 cannot read v1: field 'gift_note' is not in v1 "
            "and has no default in v2",
            id="adds-a-field-without-default",
        ),
    ],
)
def test_an_incompatible_v2_fails_naming_the_field(
    tmp_path: Path, make_v2: Any, problem: str
) -> None:
    directory = store_with_v2(tmp_path, make_v2(order_created_v1()))

    result = runner.invoke(app, ["schemas", "check", "--dir", str(directory)])

    assert result.exit_code == 1
    assert f"problem: {problem}" in result.stdout.splitlines()
    assert "fix them before any service publishes" in result.stderr


def test_a_type_change_breaks_both_directions(tmp_path: Path) -> None:
    v2 = with_field(order_created_v1(), {"name": "total_amount", "type": "string"})
    directory = store_with_v2(tmp_path, v2)

    result = runner.invoke(app, ["schemas", "check", "--dir", str(directory), "--json"])

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["problems"] == [
        "OrderCreated v2 cannot read v1: field 'total_amount' changed type long -> string",
        "OrderCreated v1 cannot read v2: field 'total_amount' changed type string -> long",
    ]


def test_a_file_named_after_another_record_fails(tmp_path: Path) -> None:
    shutil.copy(SCHEMA_DIR / "UserDeleted.v1.avsc", tmp_path / "UserRemoved.v1.avsc")

    result = runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "UserRemoved.v1.avsc: defines record 'UserDeleted'" in result.stdout


def test_a_missing_directory_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path / "nowhere")])

    assert result.exit_code == 1
    assert "is not a directory" in result.stdout


def test_help_explains_the_group_and_the_check() -> None:
    group = runner.invoke(app, ["schemas", "--help"])
    check = runner.invoke(app, ["schemas", "check", "--help"])

    assert group.exit_code == check.exit_code == 0
    assert "check" in group.stdout
    assert "backward and forward compatible" in check.stdout
    assert "--dir" in check.stdout
    assert "--json" in check.stdout
