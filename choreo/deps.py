"""FastAPI dependencies every service's routers share, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from choreo.auth import AdminUser, CurrentUser
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.errors import ChoreoError


async def _unit_of_work(request: Request) -> UnitOfWork:
    factory: UnitOfWorkFactory | None = getattr(request.app.state, "uow_factory", None)
    if factory is None:
        raise ChoreoError("this service has no database")
    return factory()


# A fresh, unopened unit of work: the route opens it with `async with uow:`.
Uow = Annotated[UnitOfWork, Depends(_unit_of_work)]

__all__ = ["AdminUser", "CurrentUser", "Uow"]
