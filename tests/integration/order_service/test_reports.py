"""The admin reports through the gateway, on orders whose facts are placed at chosen times:
calendar periods in a time zone (a daylight-saving day included), zero rows for quiet periods,
refunds counted on their own day (a PaymentRefunded consumed by the running service), CSV the
same as JSON, and bad requests refused."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from choreo import records
from choreo.auth import SigningKey
from choreo.testing import ServiceProcess, StartService, eventually, publish, query
from choreo.testing import records as make

REPORTS = "/api/v1/admin/reports"
ANN, BEA = str(uuid.uuid4()), str(uuid.uuid4())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def order(
    service: ServiceProcess,
    user_id: str,
    total: int,
    placed: str,
    *events: tuple[str, str, str],
    status: str = "CONFIRMED",
    cancel_reason: str | None = None,
    currency: str = "USD",
) -> str:
    """An order as the saga would have left it: its row and its timeline (type, direction,
    time) written straight to the order service's database."""
    assert service.database_url is not None
    order_id = str(uuid.uuid4())
    await query(
        service.database_url,
        "INSERT INTO orders (id, user_id, status, cancel_reason, total_amount, currency,"
        " deadline, request_hash, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 'h', %s, %s)",
        order_id,
        user_id,
        status,
        cancel_reason,
        total,
        currency,
        at(placed) + timedelta(minutes=15),
        at(placed),
        at(placed),
    )
    for event_type, direction, moment in events:
        await query(
            service.database_url,
            "INSERT INTO order_timeline (order_id, event_id, event_type, direction, source,"
            " occurred_at, summary) VALUES (%s, %s, %s, %s, 'test', %s, '')",
            order_id,
            str(uuid.uuid4()),
            event_type,
            direction,
            at(moment),
        )
    return order_id


def confirmed(moment: str) -> tuple[str, str, str]:
    return ("OrderConfirmed", "emitted", moment)


def paid(moment: str) -> tuple[str, str, str]:
    return ("PaymentSucceeded", "consumed", moment)


async def report(api: httpx.AsyncClient, name: str, **params: str) -> dict[str, Any]:
    response = await api.get(f"{REPORTS}/{name}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def figures(body: dict[str, Any], *columns: str) -> dict[str, tuple[Any, ...]]:
    return {row["period_start"]: tuple(row[c] for c in columns) for row in body["rows"]}


async def test_reports_count_each_fact_in_its_own_calendar_period(
    start_service: StartService, signing_key: SigningKey, kafka_bootstrap: str, topics: str
) -> None:
    orders = start_service("order")
    gateway = start_service("gateway", ORDER_SERVICE_URL=orders.url, REDIS_URL="")
    january = await order(
        orders,
        ANN,
        5_000,
        "2026-01-10T09:00:00",
        paid("2026-01-10T09:00:01"),
        confirmed("2026-01-10T09:00:02"),
    )
    await order(
        orders,
        ANN,
        3_000,
        "2026-01-20T12:00:00",
        paid("2026-01-20T12:00:01"),
        confirmed("2026-01-20T12:00:02"),
    )
    await order(
        orders,
        BEA,
        1_000,
        "2026-02-02T08:00:00",
        ("PaymentFailed", "consumed", "2026-02-02T08:00:01"),
        ("OrderCancelled", "emitted", "2026-02-02T08:00:02"),
        status="CANCELLED",
        cancel_reason="PAYMENT_FAILED",
    )
    await order(
        orders, BEA, 9_900, "2026-01-15T08:00:00", confirmed("2026-01-15T08:00:01"), currency="EUR"
    )

    # February's refund of a January order, as the payment service announces it.
    refund = make.payment_refunded(
        order_id=january, amount=2_000, refunded_at=at("2026-02-03T10:00:00")
    )
    await publish(kafka_bootstrap, topics, refund)
    assert orders.database_url is not None
    url = orders.database_url

    async def refunded() -> bool:
        return bool(await query(url, "SELECT 1 FROM order_refunds"))

    await eventually(refunded, "the PaymentRefunded applied")
    timeline = await query(
        url,
        "SELECT event_type, summary FROM order_timeline WHERE order_id = %s ORDER BY id",
        january,
    )
    assert timeline[-1] == ("PaymentRefunded", "refund of 2000 USD issued")

    admin = {"Authorization": f"Bearer {signing_key.issue(str(uuid.uuid4()), roles=['admin'])}"}
    async with gateway.client() as api:
        api.headers.update(admin)
        monthly = {"from": "2026-01-01", "to": "2026-02-28", "interval": "month"}
        sales = await report(api, "sales", **monthly)
        assert sales["columns"] == [
            "period_start",
            "period_end",
            "orders",
            "gross_sales",
            "refunds",
            "net_sales",
            "average_order_value",
        ]
        # The refund lowers February's net sales, not January's; EUR orders are not USD sales.
        assert figures(
            sales, "orders", "gross_sales", "refunds", "net_sales", "average_order_value"
        ) == {
            "2026-01-01": (2, 8_000, 0, 8_000, 4_000),
            "2026-02-01": (0, 0, 2_000, -2_000, 0),
        }
        eur = await report(api, "sales", **monthly, currency="EUR")
        assert figures(eur, "orders", "gross_sales")["2026-01-01"] == (1, 9_900)

        # Days: one row each, zeros where nothing happened.
        daily = await report(api, "sales", **{"from": "2026-01-09", "to": "2026-01-11"})
        assert figures(daily, "orders", "gross_sales") == {
            "2026-01-09": (0, 0),
            "2026-01-10": (1, 5_000),
            "2026-01-11": (0, 0),
        }
        payments = await report(api, "payments", **monthly)
        assert figures(
            payments,
            "payments_succeeded",
            "payments_failed",
            "payment_volume",
            "authorisation_rate",
        ) == {
            "2026-01-01": (2, 0, 8_000, 1.0),
            "2026-02-01": (0, 1, 0, 0.0),
        }
        quiet = await report(api, "payments", **{"from": "2026-03-01", "to": "2026-03-01"})
        assert figures(quiet, "payments_succeeded", "authorisation_rate") == {
            "2026-03-01": (0, None)
        }
        refunds = await report(api, "refunds", **monthly)
        assert figures(refunds, "refunds", "refunded_amount") == {
            "2026-01-01": (0, 0),
            "2026-02-01": (1, 2_000),
        }
        cancellations = await report(api, "cancellations", **monthly)
        assert figures(cancellations, "cancellations", "payment_failed", "timeout") == {
            "2026-01-01": (0, 0, 0),
            "2026-02-01": (1, 1, 0),
        }
        customers = await report(api, "customers", **monthly)
        assert figures(customers, "customers", "new_customers", "returning_customers") == {
            # Bea's first order was in EUR, in January: customers count every currency.
            "2026-01-01": (2, 2, 0),
            "2026-02-01": (1, 0, 1),
        }
        # ISO weeks start on Monday: 2026-01-10 is a Saturday of the week of the 5th.
        weekly = await report(
            api, "sales", **{"from": "2026-01-10", "to": "2026-01-20", "interval": "week"}
        )
        assert [row["period_start"] for row in weekly["rows"]] == [
            "2026-01-05",
            "2026-01-12",
            "2026-01-19",
        ]

        # CSV: the same rows.
        response = await api.get(f"{REPORTS}/sales", params={**monthly, "format": "csv"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [{k: str(v) for k, v in row.items()} for row in sales["rows"]] == rows

        # Bad requests say what is wrong.
        for params, said in (
            ({"from": "2026-01-01", "to": "2026-01-02", "tz": "Mars/Olympus"}, "unknown time zone"),
            ({"from": "2026-02-01", "to": "2026-01-01"}, "is before from"),
            ({"from": "2020-01-01", "to": "2026-01-01"}, "more than 1000 periods"),
        ):
            response = await api.get(f"{REPORTS}/sales", params=params)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_report"
            assert said in response.json()["error"]["message"]
        for path, params in (
            (f"{REPORTS}/sales", {"from": "2026-01-01", "to": "2026-01-02", "interval": "year"}),
            (f"{REPORTS}/sales", {"from": "yesterday", "to": "2026-01-02"}),
            (f"{REPORTS}/sales", {"to": "2026-01-02"}),
            (f"{REPORTS}/profit", {"from": "2026-01-01", "to": "2026-01-02"}),
            (f"{REPORTS}/sales", {"from": "2026-01-01", "to": "2026-01-02", "currency": "usd"}),
        ):
            response = await api.get(path, params=params)
            assert response.status_code == 422, (path, params, response.text)
        customer = {"Authorization": f"Bearer {signing_key.issue(str(uuid.uuid4()))}"}
        refused = await api.get(f"{REPORTS}/sales", params=monthly, headers=customer)
        assert refused.status_code == 403


async def test_a_day_is_a_calendar_day_of_the_time_zone_across_a_daylight_saving_change(
    start_service: StartService, signing_key: SigningKey
) -> None:
    orders = start_service("order")
    # New York moved its clocks forward on 2026-03-08: that day lasted 23 hours, from 05:00
    # to 04:00 UTC. 03:30 UTC on the 9th is still the 8th there; 04:30 UTC is the 9th.
    await order(orders, ANN, 100, "2026-03-09T03:30:00", confirmed("2026-03-09T03:30:00"))
    await order(orders, BEA, 200, "2026-03-09T04:30:00", confirmed("2026-03-09T04:30:00"))
    admin = signing_key.issue(str(uuid.uuid4()), roles=["admin"])
    async with orders.client(admin) as api:
        days = {"from": "2026-03-08", "to": "2026-03-09"}
        new_york = await report(api, "sales", **days, tz="America/New_York")
        assert figures(new_york, "gross_sales") == {"2026-03-08": (100,), "2026-03-09": (200,)}
        utc = await report(api, "sales", **days)
        assert figures(utc, "gross_sales") == {"2026-03-08": (0,), "2026-03-09": (300,)}


async def test_the_risk_report_counts_decisions_and_the_time_to_decide_a_review(
    start_service: StartService, signing_key: SigningKey, kafka_bootstrap: str, topics: str
) -> None:
    orders = start_service("order")
    gateway = start_service("gateway", ORDER_SERVICE_URL=orders.url, REDIS_URL="")
    url = orders.database_url
    assert url is not None
    now = datetime.now(UTC)
    placed = now.strftime("%Y-%m-%dT%H:%M:%S")  # deadlines 15 minutes on: none is swept
    approved, held, declined = [
        await order(orders, ANN, 2_500, placed, status="PENDING") for _ in range(3)
    ]
    reason = records.RiskReason(rule="card_velocity_review", points=0, detail="attempt 6")
    await publish(
        kafka_bootstrap,
        topics,
        make.risk_assessed(order_id=approved, user_id=ANN, assessed_at=now - timedelta(minutes=31)),
        make.risk_assessed(
            order_id=held,
            user_id=ANN,
            decision="REVIEW",
            reasons=[reason],
            review_expires_at=now + timedelta(days=7),
            assessed_at=now - timedelta(minutes=30),
        ),
        make.risk_assessed(
            order_id=declined,
            user_id=ANN,
            decision="DECLINE",
            score=80,
            assessed_at=now - timedelta(minutes=29),
        ),
    )

    async def status_of(order_id: str) -> str:
        return str((await query(url, "SELECT status FROM orders WHERE id = %s", order_id))[0][0])

    async def on_hold() -> bool:
        return await status_of(held) == "ON_HOLD"

    await eventually(on_hold, "the held order ON_HOLD")
    # Its deadline moved past the review's expiry: the deadline sweep leaves it alone.
    [(deadline,)] = await query(url, "SELECT deadline FROM orders WHERE id = %s", held)
    assert deadline > now + timedelta(days=7)
    # An admin approved it: its capture's PaymentSucceeded ends the hold.
    await publish(kafka_bootstrap, topics, make.payment_succeeded(order_id=held, amount=2_500))

    async def confirmed_now() -> bool:
        return await status_of(held) == "CONFIRMED"

    await eventually(confirmed_now, "the held order CONFIRMED")
    admin = {"Authorization": f"Bearer {signing_key.issue(str(uuid.uuid4()), roles=['admin'])}"}
    today = now.date()
    days = {"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()}
    async with gateway.client() as api:
        api.headers.update(admin)
        risk = await report(api, "risk", **days, tz="UTC")
        counts = ("screened", "approved", "held_for_review", "declined", "reviews_decided")
        quiet, *recent = risk["rows"]  # the last 31 minutes may reach into yesterday
        assert [quiet[c] for c in counts] == [0, 0, 0, 0, 0]
        assert (quiet["review_rate"], quiet["median_minutes_to_decision"]) == (None, None)
        assert [sum(row[c] for row in recent) for c in counts] == [3, 1, 1, 1, 1]
        (decided,) = [row for row in recent if row["reviews_decided"]]
        # Held 30 minutes before the approval's PaymentSucceeded arrived.
        assert 29.5 < decided["median_minutes_to_decision"] < 35, decided
        if recent[-1]["screened"] == 3:  # all today: the rates of one day
            assert (recent[-1]["review_rate"], recent[-1]["blocked_rate"]) == (0.3333, 0.3333)
        response = await api.get(f"{REPORTS}/risk", params={**days, "format": "csv"})
        rows = list(csv.DictReader(io.StringIO(response.text)))
        as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in risk["rows"]]
        assert as_text == rows
