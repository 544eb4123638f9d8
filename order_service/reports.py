"""Admin reports: sales, payments, refunds, cancellations, risk and customers per calendar
period, read from the order service's own facts (its orders, the saga timeline of the events it
consumed and emitted, the refunds and risk decisions the payment service announced): no other
service's database.

A period is a calendar day, ISO week (from Monday) or month in the report's time zone, so a day
across a daylight-saving change lasts 23 or 25 hours; the periods cover `from` to `to` (dates,
both included) and a period without activity is a row of zeros. Money is in minor units of one
currency (the report's `currency`: sales, payments and refunds count only its orders;
cancellations and customers count every order); an event counts in the period of its own
time (a refund on the day it was made, whatever the day of its order). A customer is new in
the period of their first order ever, returning in later ones. The risk report counts every
screening decision in the period it was made (a review rate is held ÷ screened, a blocked rate
declined ÷ screened) and each review in the period it was decided (its median time from the
hold, in minutes).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text

from choreo.db import UnitOfWork
from order_service.domain import CancelReason, OrderError

MAX_PERIODS = 1_000
"""Periods one report may hold (~2.7 years of days): a bound on its cost."""


class ReportName(StrEnum):
    SALES = "sales"
    PAYMENTS = "payments"
    REFUNDS = "refunds"
    CANCELLATIONS = "cancellations"
    RISK = "risk"
    CUSTOMERS = "customers"


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class InvalidReportError(OrderError):
    """A report that cannot be made as asked (an unknown time zone, `to` before `from`, ...)."""


@dataclass(frozen=True)
class Period:
    start: date
    """Its first day, in the report's time zone."""
    end: date
    """The first day of the next period."""
    starts_at: datetime
    ends_at: datetime
    """Its bounds in UTC: from `starts_at` included to `ends_at` excluded."""


def periods(first: date, last: date, interval: Interval, zone_name: str) -> list[Period]:
    """The calendar periods of `interval` in `zone_name` (an IANA name) covering `first` to
    `last`, both included. Raises InvalidReportError for an unknown zone, `last` before
    `first`, or more than MAX_PERIODS periods."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidReportError(f"unknown time zone {zone_name!r} (an IANA name)") from None
    if last < first:
        raise InvalidReportError(f"to ({last}) is before from ({first})")
    start = _period_start(first, interval)
    found: list[Period] = []
    while start <= last:
        end = _next_start(start, interval)
        found.append(Period(start, end, _midnight(start, zone), _midnight(end, zone)))
        if len(found) > MAX_PERIODS:
            raise InvalidReportError(
                f"more than {MAX_PERIODS} periods: a longer interval or a shorter range"
            )
        start = end
    return found


def _period_start(day: date, interval: Interval) -> date:
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())
    if interval is Interval.MONTH:
        return day.replace(day=1)
    return day


def _next_start(start: date, interval: Interval) -> date:
    if interval is Interval.DAY:
        return start + timedelta(days=1)
    if interval is Interval.WEEK:
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The day's first moment in `zone`, in UTC (zoneinfo resolves a skipped midnight forward)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Report:
    report: ReportName
    interval: Interval
    tz: str
    currency: str
    columns: list[str]
    rows: list[dict[str, Any]]

    def to_csv(self) -> str:
        """The rows as CSV (RFC 4180, a header line first); a rate without data is empty."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


# Each report: its metric columns and one statement. `p` holds the periods (n, start_at,
# end_at); every statement answers one row per period, in order, zeros where nothing happened.
_PERIODS = """
    WITH p AS (
        SELECT n, start_at, end_at
        FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
            WITH ORDINALITY AS p(start_at, end_at, n)
    )"""


_STATEMENTS: dict[ReportName, tuple[list[str], str]] = {
    ReportName.SALES: (
        ["orders", "gross_sales", "refunds", "net_sales", "average_order_value"],
        _PERIODS
        + """,
        confirmed AS (
            SELECT p.n, count(o.id) AS events,
                CAST(coalesce(sum(o.total_amount), 0) AS bigint) AS amount
            FROM p LEFT JOIN (
                order_timeline t JOIN orders o ON o.id = t.order_id AND o.currency = :currency
            ) ON t.event_type = 'OrderConfirmed' AND t.direction = 'emitted'
                AND t.occurred_at >= p.start_at AND t.occurred_at < p.end_at
            GROUP BY p.n
        ),
        refunded AS (
            SELECT p.n, CAST(coalesce(sum(r.amount), 0) AS bigint) AS refunds
            FROM p LEFT JOIN order_refunds r ON r.currency = :currency
                AND r.refunded_at >= p.start_at AND r.refunded_at < p.end_at
            GROUP BY p.n
        )
        SELECT c.events AS orders, c.amount AS gross_sales, r.refunds
        FROM confirmed c JOIN refunded r USING (n) ORDER BY n""",
    ),
    ReportName.PAYMENTS: (
        ["payments_succeeded", "payments_failed", "payment_volume", "authorisation_rate"],
        _PERIODS
        + """
        SELECT
            (SELECT count(*) FROM order_timeline t JOIN orders o ON o.id = t.order_id
             WHERE o.currency = :currency AND t.event_type = 'PaymentSucceeded'
               AND t.direction = 'consumed'
               AND t.occurred_at >= p.start_at AND t.occurred_at < p.end_at)
                AS payments_succeeded,
            (SELECT count(*) FROM order_timeline t JOIN orders o ON o.id = t.order_id
             WHERE o.currency = :currency AND t.event_type = 'PaymentFailed'
               AND t.direction = 'consumed'
               AND t.occurred_at >= p.start_at AND t.occurred_at < p.end_at)
                AS payments_failed,
            (SELECT CAST(coalesce(sum(o.total_amount), 0) AS bigint) FROM order_timeline t
             JOIN orders o ON o.id = t.order_id
             WHERE o.currency = :currency AND t.event_type = 'PaymentSucceeded'
               AND t.direction = 'consumed'
               AND t.occurred_at >= p.start_at AND t.occurred_at < p.end_at)
                AS payment_volume
        FROM p ORDER BY p.n""",
    ),
    ReportName.REFUNDS: (
        ["refunds", "refunded_amount"],
        _PERIODS
        + """
        SELECT count(r.refund_id) AS refunds,
            CAST(coalesce(sum(r.amount), 0) AS bigint) AS refunded_amount
        FROM p LEFT JOIN order_refunds r ON r.currency = :currency
            AND r.refunded_at >= p.start_at AND r.refunded_at < p.end_at
        GROUP BY p.n ORDER BY p.n""",
    ),
    ReportName.CANCELLATIONS: (
        ["cancellations", *(reason.value.lower() for reason in CancelReason)],
        _PERIODS
        + """
        SELECT count(o.id) AS cancellations, """
        + ", ".join(
            f"count(o.id) FILTER (WHERE o.cancel_reason = '{reason.value}')"
            f" AS {reason.value.lower()}"
            for reason in CancelReason
        )
        + """
        FROM p LEFT JOIN (
            order_timeline t JOIN orders o ON o.id = t.order_id
        ) ON t.event_type = 'OrderCancelled' AND t.direction = 'emitted'
            AND t.occurred_at >= p.start_at AND t.occurred_at < p.end_at
        GROUP BY p.n ORDER BY p.n""",
    ),
    ReportName.RISK: (
        [
            "screened",
            "approved",
            "held_for_review",
            "declined",
            "review_rate",
            "blocked_rate",
            "reviews_decided",
            "median_minutes_to_decision",
        ],
        _PERIODS
        + """,
        screened AS (
            SELECT p.n, count(r.order_id) AS screened,
                count(r.order_id) FILTER (WHERE r.decision = 'APPROVE') AS approved,
                count(r.order_id) FILTER (WHERE r.review_expires_at IS NOT NULL)
                    AS held_for_review,
                count(r.order_id) FILTER (WHERE r.decision = 'DECLINE') AS declined
            FROM p LEFT JOIN order_risk r
                ON r.assessed_at >= p.start_at AND r.assessed_at < p.end_at
            GROUP BY p.n
        ),
        decided AS (
            SELECT p.n, count(r.order_id) AS reviews_decided,
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM r.review_decided_at - r.assessed_at) / 60
                ) AS median_minutes
            FROM p LEFT JOIN order_risk r ON r.review_expires_at IS NOT NULL
                AND r.review_decided_at >= p.start_at AND r.review_decided_at < p.end_at
            GROUP BY p.n
        )
        SELECT s.screened, s.approved, s.held_for_review, s.declined, d.reviews_decided,
            d.median_minutes
        FROM screened s JOIN decided d USING (n) ORDER BY n""",
    ),
    ReportName.CUSTOMERS: (
        ["customers", "new_customers", "returning_customers"],
        _PERIODS
        + """,
        firsts AS (SELECT user_id, min(created_at) AS first_at FROM orders GROUP BY user_id)
        SELECT count(DISTINCT o.user_id) AS customers,
            count(DISTINCT o.user_id) FILTER (WHERE f.first_at >= p.start_at) AS new_customers
        FROM p LEFT JOIN orders o
            ON o.created_at >= p.start_at AND o.created_at < p.end_at
        LEFT JOIN firsts f ON f.user_id = o.user_id
        GROUP BY p.n ORDER BY p.n""",
    ),
}


async def make_report(
    uow: UnitOfWork,
    report: ReportName,
    *,
    first: date,
    last: date,
    interval: Interval,
    tz: str,
    currency: str,
) -> Report:
    """One row per period of `first`..`last`. Raises InvalidReportError (see `periods`)."""
    spans = periods(first, last, interval, tz)
    columns, statement = _STATEMENTS[report]
    parameters = {
        "starts": [period.starts_at for period in spans],
        "ends": [period.ends_at for period in spans],
        "currency": currency,
    }
    async with uow:
        found = (await uow.session.execute(text(statement), parameters)).mappings().all()
    rows = [
        {"period_start": period.start.isoformat(), "period_end": period.end.isoformat()}
        | _metrics(report, dict(values))
        for period, values in zip(spans, found, strict=True)
    ]
    return Report(report, interval, tz, currency, ["period_start", "period_end", *columns], rows)


def _metrics(report: ReportName, values: dict[str, Any]) -> dict[str, Any]:
    """Derived figures: net sales and the average order; the authorisation rate; returning
    customers. A rate of nothing is None (empty in CSV), not 0."""
    if report is ReportName.SALES:
        orders, gross = values["orders"], values["gross_sales"]
        values["net_sales"] = gross - values["refunds"]
        values["average_order_value"] = gross // orders if orders else 0
    elif report is ReportName.PAYMENTS:
        tried = values["payments_succeeded"] + values["payments_failed"]
        values["authorisation_rate"] = (
            round(values["payments_succeeded"] / tried, 4) if tried else None
        )
    elif report is ReportName.CUSTOMERS:
        values["returning_customers"] = values["customers"] - values["new_customers"]
    elif report is ReportName.RISK:
        screened = values["screened"]
        values["review_rate"] = round(values["held_for_review"] / screened, 4) if screened else None
        values["blocked_rate"] = round(values["declined"] / screened, 4) if screened else None
        median = values.pop("median_minutes")
        values["median_minutes_to_decision"] = None if median is None else round(median, 2)
    return values
