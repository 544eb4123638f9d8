"""The unit of work's statements: SQLAlchemy Core statements sent on its psycopg connection.

SQLAlchemy builds and compiles the statements (its compiled cache is keyed the same way, by
the statement's cache key); this module sends them with psycopg directly, without SQLAlchemy's
async session, execution context and result objects. Measured on a 4-statement step
transaction (issue 14): 1.8 to 2.0 ms of CPU through `AsyncSession.execute`, 1.2 to 1.3 ms this way,
~0.4 ms of which is building the statements. The bind and result processors of each column's
type are SQLAlchemy's own, so values go in and come out as they did through a session
(a `UUID(as_uuid=False)` column still reads as `str`, an `Enum` column as its member).

Errors come out as SQLAlchemy's: a psycopg error is wrapped in the `sqlalchemy.exc.DBAPIError`
subclass of the same name (`IntegrityError`, `OperationalError`, ...), as a session raises it,
so `choreo.errors.failure_of` classifies both paths alike.

What it does not do (each raises `UnsupportedStatementError` on first use rather than run
differently from SQLAlchemy): Python-side column defaults (`Column(default=...)`; the
services' tables use server defaults), executemany with RETURNING, and `literal_execute`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from choreo.errors import ChoreoError

# Statement shapes are few (each handler's statements, whatever their values), so the cache
# stays small; the cap only guards against a caller that builds unbounded shapes.
_CACHE_LIMIT: Final = 2000


class UnsupportedStatementError(ChoreoError):
    """A statement needs a part of SQLAlchemy's execution this layer does not carry."""


Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Row(tuple[Any, ...]):
    """A result row: a tuple whose columns are also attributes (`row.status`), like
    SQLAlchemy's `Row`; `_mapping` is a `dict` of them."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


_ROW_TYPES: dict[tuple[str, ...], type[Row]] = {}


def _row_type(names: tuple[str, ...]) -> type[Row]:
    row_type = _ROW_TYPES.get(names)
    if row_type is None:
        attributes: dict[str, Any] = {"__slots__": (), "_fields": names}
        for index, name in enumerate(names):
            if name.isidentifier() and not hasattr(Row, name) and name not in attributes:
                attributes[name] = property(operator.itemgetter(index))
        row_type = type("Row", (Row,), attributes)
        _ROW_TYPES[names] = row_type
    return row_type


T = TypeVar("T")


class _Items(Generic[T]):
    """Items fetched whole, read as SQLAlchemy's results read them."""

    __slots__ = ("items",)

    def __init__(self, items: list[T]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def all(self) -> list[T]:
        return list(self.items)

    def first(self) -> T | None:
        return self.items[0] if self.items else None

    def one_or_none(self) -> T | None:
        if len(self.items) > 1:
            raise sa_exc.MultipleResultsFound(
                "Multiple rows were found when one or none was required"
            )
        return self.first()

    def one(self) -> T:
        if not self.items:
            raise sa_exc.NoResultFound("No row was found when one was required")
        return self.one_or_none()  # type: ignore[return-value]


class Result(_Items[Row]):
    """The rows of one statement, fetched whole (step transactions read a handful), with the
    subset of SQLAlchemy's `Result` the services use."""

    __slots__ = ("rowcount",)

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        super().__init__(rows)
        self.rowcount = rowcount  # rows the statement matched or wrote (psycopg's rowcount)

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> ScalarResult:
        return ScalarResult([row[0] for row in self.items])

    def mappings(self) -> MappingResult:
        return MappingResult([row._mapping for row in self.items])


class ScalarResult(_Items[Any]):
    """The first column of each row."""


class MappingResult(_Items[dict[str, Any]]):
    """Each row as a `dict` of its columns."""


Processor = Callable[[Any], Any]


@dataclass(slots=True)
class _Plan:
    """A compiled statement shape: its SQL and how to convert values in and out."""

    compiled: SQLCompiler
    sql: str
    bind_processors: Mapping[str, Processor]
    expanding: bool  # `in_()` lists: the SQL is rendered per execution
    result_names: tuple[str, ...] | None
    result_types: tuple[Any, ...]
    # Filled on the first execution, from the type codes the server sent.
    result_processors: tuple[Processor | None, ...] | None = None
    row_type: type[Row] | None = None
    codes: tuple[int, ...] = field(default=())


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _plan(
    dialect: Dialect, statement: ClauseElement, column_keys: tuple[str, ...], many: bool
) -> tuple[_Plan, Sequence[Any], Mapping[str, Any] | None]:
    cache_key = statement._generate_cache_key()
    if cache_key is None:
        # A construct SQLAlchemy does not cache either (a multi-row `values([...])`): compiled
        # for this execution only, its values taken from the statement itself.
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys), for_executemany=many
        )
        return _new_plan(compiled), (), None  # type: ignore[arg-type]
    key = (dialect.name, dialect.driver, cache_key.key, column_keys, many)
    plan = _PLANS.get(key)
    if plan is None:
        compiled = statement.compile(
            dialect=dialect,
            cache_key=cache_key,
            column_keys=list(column_keys),
            for_executemany=many,
        )
        plan = _new_plan(compiled)  # type: ignore[arg-type]
        if len(_PLANS) >= _CACHE_LIMIT:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan, cache_key.bindparams, cache_key.params


def _new_plan(compiled: SQLCompiler) -> _Plan:
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise UnsupportedStatementError(
            f"Python-side column defaults are not supported here: {compiled.string}"
        )
    if compiled.literal_execute_params:
        raise UnsupportedStatementError(f"literal_execute is not supported here: {compiled.string}")
    columns = compiled._result_columns
    return _Plan(
        compiled=compiled,
        sql=compiled.string,
        bind_processors=dict(compiled._bind_processors),  # type: ignore[arg-type]
        expanding=bool(compiled.post_compile_params),
        result_names=tuple(column.keyname for column in columns) if columns else None,
        result_types=tuple(column.type for column in columns),
    )


class Session:
    """Core statements on one psycopg connection, inside the unit of work's transaction.

    `execute(statement, parameters)`: `parameters` is one mapping (bound to the statement's
    `bindparam`s or, for an `insert()`/`update()` without values, its columns) or a list of
    them (executemany, as `Session.execute` takes it). Returns a `Result`.
    """

    __slots__ = ("_connection", "_dialect")

    def __init__(self, connection: psycopg.AsyncConnection[Any], dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    @property
    def driver_connection(self) -> psycopg.AsyncConnection[Any]:
        return self._connection

    async def scalar(
        self, statement: ClauseElement, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def execute(self, statement: ClauseElement, parameters: Parameters = None) -> Result:
        many = isinstance(parameters, Sequence) and not isinstance(parameters, Mapping)
        if many:
            batch: Sequence[Mapping[str, Any]] = parameters  # type: ignore[assignment]
            if not batch:
                return Result([], 0)
            if len(batch) == 1:
                many, parameters = False, batch[0]
        single: Mapping[str, Any] | None = None if many else parameters  # type: ignore[assignment]
        column_keys = tuple(batch[0] if many else single or ())
        plan, extracted, collected = _plan(self._dialect, statement, column_keys, many)
        compiled = plan.compiled
        if many:
            if plan.expanding or plan.result_names:
                raise UnsupportedStatementError(
                    f"executemany with RETURNING or in_() is not supported here: {plan.sql}"
                )
            rows = [
                self._bind(
                    plan,
                    compiled.construct_params(
                        p,
                        escape_names=False,
                        _group_number=n,
                        extracted_parameters=extracted,
                        _collected_params=collected,
                    ),
                )
                for n, p in enumerate(batch)
            ]
            return await self._send_many(plan.sql, rows)
        values = compiled.construct_params(
            single, escape_names=False, extracted_parameters=extracted, _collected_params=collected
        )
        sql = plan.sql
        processors: Mapping[str, Processor] = plan.bind_processors
        if plan.expanding:
            expanded = compiled._process_parameters_for_postcompile(values)
            sql = expanded.statement
            processors = {**plan.bind_processors, **expanded.processors}
        return await self._send(plan, sql, self._bind_with(processors, values))

    @staticmethod
    def _bind(plan: _Plan, values: Mapping[str, Any]) -> dict[str, Any]:
        return Session._bind_with(plan.bind_processors, values)

    @staticmethod
    def _bind_with(
        processors: Mapping[str, Processor], values: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not processors:
            return dict(values)
        return {
            key: processors[key](value) if key in processors else value
            for key, value in values.items()
        }

    async def _send(self, plan: _Plan, sql: str, values: dict[str, Any]) -> Result:
        try:
            cursor = self._connection.cursor()
            await cursor.execute(sql, values)
            description = cursor.description
            raw = await cursor.fetchall() if description is not None else []
        except psycopg.Error as error:
            raise wrapped_error(sql, values, error) from error
        if description is None:
            return Result([], cursor.rowcount)
        codes = tuple(column.type_code for column in description)
        if plan.row_type is None or plan.codes != codes:
            self._learn_result(plan, description, codes)
        row_type = plan.row_type
        processors = plan.result_processors
        assert row_type is not None
        assert processors is not None
        if any(processors):
            rows = [
                row_type(
                    value if p is None else p(value)
                    for p, value in zip(processors, row, strict=True)
                )
                for row in raw
            ]
        else:
            rows = [row_type(row) for row in raw]
        return Result(rows, cursor.rowcount)

    def _learn_result(
        self, plan: _Plan, description: Sequence[Any], codes: tuple[int, ...]
    ) -> None:
        names = plan.result_names
        if names is None or len(names) != len(description):  # text(), or a shape not compiled
            names = tuple(column.name for column in description)
            processors: tuple[Processor | None, ...] = (None,) * len(description)
        else:
            processors = tuple(
                type_._cached_result_processor(self._dialect, code)
                for type_, code in zip(plan.result_types, codes, strict=True)
            )
        plan.codes = codes
        plan.row_type = _row_type(names)
        plan.result_processors = processors

    async def _send_many(self, sql: str, rows: list[dict[str, Any]]) -> Result:
        try:
            cursor = self._connection.cursor()
            await cursor.executemany(sql, rows)
        except psycopg.Error as error:
            raise wrapped_error(sql, rows, error) from error
        return Result([], cursor.rowcount)


def wrapped_error(sql: str, values: Any, error: psycopg.Error) -> sa_exc.DBAPIError:
    """The SQLAlchemy exception a session would raise for `error`."""
    wrapped = sa_exc.DBAPIError.instance(
        sql,
        values,
        error,
        psycopg.Error,
        connection_invalidated=isinstance(error, psycopg.OperationalError) and not error.sqlstate,
    )
    assert isinstance(wrapped, sa_exc.DBAPIError)
    return wrapped
