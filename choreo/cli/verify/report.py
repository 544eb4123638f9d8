"""What `choreo verify` found: one result per check (ok, violations, could not verify, skipped)
and each finding on one line, for people (a summary table, then the findings) and for scripts
(`--json`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from choreo.cli.output import moment


class Severity(StrEnum):
    VIOLATION = "violation"
    """The system is not consistent: exit status 1."""
    WARNING = "warning"
    """Worth a person's look, but no inconsistency by itself: the exit status stays 0."""


@dataclass(frozen=True)
class Finding:
    """One thing that is not as it should be, about one order, product, intent, row..."""

    id: str
    check: str
    what: str
    expected: str
    actual: str
    severity: Severity = Severity.VIOLATION

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "check": self.check,
            "what": self.what,
            "expected": self.expected,
            "actual": self.actual,
        }


class Status(StrEnum):
    OK = "ok"
    VIOLATIONS = "violations"
    WARNINGS = "warnings"
    """Only warnings: consistent, but something to look at."""
    COULD_NOT_VERIFY = "could not verify"
    """A source the check needs could not be read: the exit status is 1, never a silent pass."""
    SKIPPED = "skipped"
    """An optional source (Stripe, the e-mail sink) is not reachable or not configured."""


@dataclass
class CheckResult:
    name: str
    """Its id in JSON and in each finding: `orders-terminal`, `stripe`..."""
    title: str
    """What it checks, in a few words, for the summary table."""
    summary: str = ""
    """What was looked at, or why it could not be: one line."""
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """What it counted and measured (backlogs, lags, sizes), for scripts."""
    error: str | None = None
    skipped: str | None = None

    def add(
        self,
        id: str,
        what: str,
        expected: str,
        actual: str,
        severity: Severity = Severity.VIOLATION,
    ) -> None:
        self.findings.append(Finding(id, self.name, what, expected, actual, severity))

    def of(self, severity: Severity) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity is severity]

    @property
    def status(self) -> Status:
        if self.error is not None:
            return Status.COULD_NOT_VERIFY
        if self.skipped is not None:
            return Status.SKIPPED
        if self.of(Severity.VIOLATION):
            return Status.VIOLATIONS
        if self.of(Severity.WARNING):
            return Status.WARNINGS
        return Status.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status.value,
            "summary": self.error or self.skipped or self.summary,
            "violations": len(self.of(Severity.VIOLATION)),
            "warnings": len(self.of(Severity.WARNING)),
            "facts": self.facts,
        }


@dataclass(frozen=True)
class Report:
    checks: Sequence[CheckResult]
    scope: dict[str, Any]
    """What was audited: since when, the grace, whether the stack was quiet."""

    @property
    def violations(self) -> list[Finding]:
        return [f for check in self.checks for f in check.of(Severity.VIOLATION)]

    @property
    def warnings(self) -> list[Finding]:
        return [f for check in self.checks for f in check.of(Severity.WARNING)]

    @property
    def unverified(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status is Status.COULD_NOT_VERIFY]

    @property
    def ok(self) -> bool:
        return not self.violations and not self.unverified

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            **self.scope,
            "checks": [check.to_json() for check in self.checks],
            "violations": [finding.to_json() for finding in self.violations],
            "warnings": [finding.to_json() for finding in self.warnings],
        }


_STATUS_STYLES = {
    Status.OK: "green",
    Status.VIOLATIONS: "bold red",
    Status.WARNINGS: "yellow",
    Status.COULD_NOT_VERIFY: "bold red",
    Status.SKIPPED: "dim",
}


def print_report(out: Console, report: Report) -> None:
    """The summary table, then each violation and warning on one line."""
    table = Table(title=_title(report), title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        status = check.status
        shown = status.value
        if status is Status.VIOLATIONS:
            shown = _count(len(check.of(Severity.VIOLATION)), "violation")
        elif status is Status.WARNINGS:
            shown = _count(len(check.of(Severity.WARNING)), "warning")
        table.add_row(
            check.title,
            Text(shown, style=_STATUS_STYLES[status]),
            check.error or check.skipped or check.summary,
        )
    out.print(table)
    for heading, findings, style in (
        ("violations", report.violations, "red"),
        ("warnings", report.warnings, "yellow"),
    ):
        if not findings:
            continue
        out.print()
        out.print(Text(heading, style=f"bold {style}"))
        for finding in findings:
            out.print(
                Text.assemble(
                    "  ",
                    (finding.check, "dim"),
                    "  ",
                    (finding.id, "bold"),
                    f"  {finding.what}: expected {finding.expected}, actual {finding.actual}",
                ),
                soft_wrap=True,
            )
    out.print()
    out.print(_verdict(report))


def _title(report: Report) -> str:
    since = report.scope.get("since")
    scope = f"orders, charges and dead letters since {moment(since)}" if since else "everything"
    return f"choreo verify: {scope}, grace {report.scope['grace_seconds']:g} s"


def _verdict(report: Report) -> Text:
    if report.unverified:
        names = ", ".join(check.title for check in report.unverified)
        also = f"; {_count(len(report.violations), 'violation')}" if report.violations else ""
        return Text(f"could not verify: {names}{also}", style="bold red")
    if report.violations:
        return Text(f"inconsistent: {_count(len(report.violations), 'violation')}", "bold red")
    warned = f" ({_count(len(report.warnings), 'warning')})" if report.warnings else ""
    return Text(f"consistent{warned}", style="bold green")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
