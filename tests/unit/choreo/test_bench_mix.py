"""`choreo bench`'s order mix and its output paths, without a stack."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from choreo.bench.load import Driver, Kind, Shop
from choreo.bench.plan import Plan
from choreo.cli.bench import _unwritable


def _kinds(plan: Plan, orders: int) -> list[Kind]:
    driver = Driver(plan, Shop(), cast(Any, None), cast(Any, None))
    return [driver._new_saga(due=0.0).kind for _ in range(orders)]


@pytest.mark.parametrize(("declined", "out_of_stock"), [(0.2, 0.1), (0.5, 0.5), (0.03, 0.0)])
def test_every_run_of_orders_has_the_shares_asked_for(declined: float, out_of_stock: float) -> None:
    kinds = _kinds(Plan(declined_share=declined, out_of_stock_share=out_of_stock), 115)
    for length in (10, 57, 115):  # whatever the run's length, within one order of the share
        counted = Counter(kinds[:length])
        assert abs(counted[Kind.DECLINED] - declined * length) <= 1
        assert abs(counted[Kind.OUT_OF_STOCK] - out_of_stock * length) <= 1


def test_without_shares_every_order_is_good() -> None:
    assert set(_kinds(Plan(), 50)) == {Kind.GOOD}


def test_an_output_path_that_cannot_be_written_is_named_before_the_run(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert _unwritable(a_file / "figures.json") == f"{a_file} is not a directory"
    assert _unwritable(tmp_path) == "is a directory"
    assert _unwritable(tmp_path / "new" / "deeper" / "figures.json") is None  # made at the end
