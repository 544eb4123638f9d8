"""The unit of work's statement layer (choreo.sql): rows and values as SQLAlchemy gives them,
errors as SQLAlchemy raises them, one transaction per unit of work."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import pytest_asyncio
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Enum,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import IntegrityError, NoResultFound, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.avro import default_store
from choreo.db import UnitOfWork, UnitOfWorkError, unit_of_work_factory
from choreo.errors import Failure, failure_of
from choreo.outbox import OutboxWriter
from choreo.sql import UnsupportedStatementError

from .conftest import new_key, stock_event


class Colour(enum.StrEnum):
    RED = "RED"
    BLUE = "BLUE"


metadata = MetaData()
things = Table(
    "sql_things",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("ref", Uuid),
    Column("colour", Enum(Colour, native_enum=False, length=16)),
    Column("doc", JSONB),
    Column("price", Numeric(10, 2)),
    Column("at", DateTime(timezone=True)),
    Column("flag", Boolean),
    Column("n", Integer),
    Column("note", Text),
)
defaulted = Table(
    "sql_defaulted",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("label", String, default="python-side"),
)


@pytest_asyncio.fixture
async def tables(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine


def a_thing(n: int) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "ref": uuid.uuid4(),
        "colour": Colour.BLUE if n % 2 else Colour.RED,
        "doc": {"n": n, "tags": ["a", "b"]},
        "price": Decimal("12.50") + n,
        "at": datetime(2026, 11, 30, 12, n, tzinfo=UTC),
        "flag": n % 2 == 0,
        "n": n,
        "note": f"thing {n}",
    }


async def test_rows_and_values_are_what_sqlalchemy_returns(tables: AsyncEngine) -> None:
    rows = [a_thing(n) for n in range(3)]
    async with UnitOfWork(tables) as uow:
        await uow.session.execute(insert(things), rows)  # executemany
        ours = (await uow.session.execute(select(things).order_by(things.c.n))).all()
    async with tables.connect() as connection:
        theirs = (await connection.execute(select(things).order_by(things.c.n))).all()

    assert [tuple(row) for row in ours] == [tuple(row) for row in theirs]
    for row, sent in zip(ours, rows, strict=True):
        assert row._mapping == sent
        assert isinstance(row.id, str)  # UUID(as_uuid=False), as SQLAlchemy converts it
        assert row.colour is sent["colour"]  # the enum member, not its name
        assert [type(value) for value in row] == [type(value) for value in sent.values()]


async def test_bound_parameters_in_lists_and_rowcounts(tables: AsyncEngine) -> None:
    rows = [a_thing(n) for n in range(5)]
    ids = [str(row["id"]) for row in rows]
    async with UnitOfWork(tables) as uow:
        session = uow.session
        await session.execute(insert(things), rows)
        picked = await session.execute(
            select(things.c.n).where(things.c.id.in_(ids[1:4])).order_by(things.c.n)
        )
        assert picked.scalars().all() == [1, 2, 3]
        moved = await session.execute(
            update(things).where(things.c.n >= bindparam("least")).values(flag=True),
            {"least": 3},
        )
        assert moved.rowcount == 2
        counted = await session.scalar(text("SELECT count(*) FROM sql_things WHERE flag"))
        assert counted == 4  # 0, 2 (even) and 3, 4 (updated)
        with pytest.raises(NoResultFound):
            (await session.execute(select(things).where(things.c.n == 99))).one()
        assert (await session.execute(select(func.max(things.c.n)))).scalar_one() == 4


async def test_a_unit_of_work_commits_or_rolls_back_as_a_whole(tables: AsyncEngine) -> None:
    kept, dropped = a_thing(1), a_thing(2)
    async with UnitOfWork(tables) as uow:
        await uow.session.execute(insert(things).values(**kept))

    async def insert_then_fail() -> None:
        async with UnitOfWork(tables) as uow:
            await uow.session.execute(insert(things).values(**dropped))
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with tables.connect() as connection:
        found = (await connection.execute(select(things.c.id))).scalars().all()
    assert found == [kept["id"]]


async def test_what_waits_for_the_commit_runs_after_it_and_never_after_a_rollback(
    tables: AsyncEngine,
) -> None:
    seen: list[int] = []

    async def step(n: int, *, fail: bool) -> None:
        async with UnitOfWork(tables) as uow:
            await uow.session.execute(insert(things).values(**a_thing(n)))
            uow.after_commit(lambda: seen.append(n))
            if fail:
                raise RuntimeError("the handler failed")
            assert seen == [], "called before the commit"

    with pytest.raises(RuntimeError):
        await step(1, fail=True)
    await step(2, fail=False)

    assert seen == [2]


async def test_a_unit_in_autocommit_commits_each_statement_and_leaves_no_trace_on_the_pool(
    tables: AsyncEngine,
) -> None:
    kept, failed_after = a_thing(1), a_thing(2)
    writer = OutboxWriter(default_store(), "/test_service")

    async def insert_then_fail(thing: dict[str, object], uow: UnitOfWork) -> None:
        async with uow:
            await uow.session.execute(insert(things).values(**thing))
            raise RuntimeError("the block failed after its statement")

    async def publish() -> None:
        async with UnitOfWork(tables, writer).autocommit() as uow:
            uow.publish(stock_event(new_key(), 0).record)  # its outbox row would commit alone

    with pytest.raises(RuntimeError):
        await insert_then_fail(kept, UnitOfWork(tables).autocommit())
    with pytest.raises(UnitOfWorkError):
        await publish()
    # The next unit on the pool's connection is a transaction again: it rolls back.
    with pytest.raises(RuntimeError):
        await insert_then_fail(failed_after, UnitOfWork(tables))
    async with tables.connect() as connection:
        found = (await connection.execute(select(things.c.id))).scalars().all()
    assert found == [kept["id"]]


async def test_errors_are_sqlalchemys_and_classified_alike(tables: AsyncEngine) -> None:
    thing = a_thing(1)
    async with UnitOfWork(tables) as uow:
        await uow.session.execute(insert(things).values(**thing))
    with pytest.raises(IntegrityError) as duplicate:
        async with UnitOfWork(tables) as uow:
            await uow.session.execute(insert(things).values(**thing))
    assert failure_of(duplicate.value) is Failure.PERMANENT

    # The server ends the connection mid-transaction: an outage, and the pool drops it.
    ended_pids: list[int] = []

    async def read_after_the_server_ended_it() -> None:
        async with UnitOfWork(tables) as uow:
            pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
            ended_pids.append(pid)
            async with tables.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.sleep(0.2)
            await uow.session.execute(select(things.c.id))

    with pytest.raises(OperationalError) as ended:
        await read_after_the_server_ended_it()
    assert failure_of(ended.value) is Failure.OUTAGE
    factory = unit_of_work_factory(tables)
    for _ in range(3):
        async with factory() as uow:
            assert await uow.session.scalar(text("SELECT pg_backend_pid()")) not in ended_pids


async def test_python_side_defaults_are_refused_not_skipped(tables: AsyncEngine) -> None:
    with pytest.raises(UnsupportedStatementError, match="Python-side column defaults"):
        async with UnitOfWork(tables) as uow:
            await uow.session.execute(insert(defaulted).values(id=1))
