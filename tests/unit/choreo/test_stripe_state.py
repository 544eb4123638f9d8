"""The Stripe emulator's state file: a snapshot and a journal of changed objects. What a change
costs to keep does not grow with the store, and a restart finds every object as it was, its
references to other objects intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from choreo.stack.stripe_state import StateFile


class Stored:
    """Stands in for a localstripe object: stored under `<object>:<id>`."""

    def __init__(self, kind: str, identifier: str, **fields: Any) -> None:
        self.object = kind
        self.id = identifier
        self.__dict__.update(fields)


def state_file(path: Path) -> StateFile:
    return StateFile(path, is_stored=lambda value: isinstance(value, Stored))


def stored(*objects: Stored) -> dict[str, Any]:
    return {f"{o.object}:{o.id}": o for o in objects}


def reloaded(path: Path) -> dict[str, Any]:
    store: dict[str, Any] = {}
    state_file(path).load(store)
    return store


def test_a_change_made_through_a_reference_survives_with_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    charge = Stored("charge", "ch_1", captured=False)
    intent = Stored("payment_intent", "pi_1", latest_charge=charge, status="requires_capture")
    store = stored(charge, intent)
    state = state_file(path)
    state.mark("payment_intent:pi_1")
    state.save(store)  # the first save: a snapshot
    # A capture, as localstripe makes it: the intent read, its charge changed through it.
    intent.status = "succeeded"
    charge.captured = True
    state.mark("payment_intent:pi_1")
    state.save(store)
    assert state.journaled == 1

    again = reloaded(path)
    assert again["payment_intent:pi_1"].status == "succeeded"
    assert again["charge:ch_1"].captured is True
    assert again["payment_intent:pi_1"].latest_charge is again["charge:ch_1"]


def test_an_object_replaced_in_the_journal_is_the_one_its_referrers_hold(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    charge = Stored("charge", "ch_1", refunded=False)
    intent = Stored("payment_intent", "pi_1", latest_charge=charge)
    store = stored(charge, intent)
    state = state_file(path)
    state.snapshot(store)
    charge.refunded = True  # changed alone: the snapshot's intent still holds the old copy
    state.mark("charge:ch_1")
    state.save(store)

    again = reloaded(path)
    assert again["charge:ch_1"].refunded is True
    assert again["payment_intent:pi_1"].latest_charge is again["charge:ch_1"]


def test_keeping_a_change_costs_the_same_whatever_the_store_holds(tmp_path: Path) -> None:
    def appended(history: int) -> int:
        path = tmp_path / f"{history}.pickle"
        store = stored(*(Stored("payment_intent", f"pi_{n}", amount=n) for n in range(history)))
        state = state_file(path)
        state.snapshot(store)
        store["payment_intent:pi_new"] = Stored("payment_intent", "pi_new", amount=1)
        state.mark("payment_intent:pi_new")
        state.save(store)
        assert state.snapshots == 1, "a second snapshot instead of a journal entry"
        return (path.with_name(path.name + ".journal")).stat().st_size

    assert appended(10) == appended(10_000)


def test_a_journal_as_large_as_the_snapshot_is_folded_into_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    intent = Stored("payment_intent", "pi_1", amount=0)
    store = stored(intent)
    state = state_file(path)
    state.snapshot(store)
    journal = path.with_name(path.name + ".journal")
    for amount in range(1, 100):
        intent.amount = amount
        state.mark("payment_intent:pi_1")
        state.save(store)
        if state.snapshots > 1:
            break
    assert state.snapshots == 2
    assert not journal.exists()
    assert reloaded(path)["payment_intent:pi_1"].amount == intent.amount


def test_a_batch_cut_short_by_a_crash_is_dropped_and_the_ones_before_kept(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    customer = Stored("customer", "cus_1", email="ada@example.com")
    store = stored(customer)
    state = state_file(path)
    state.snapshot(store)
    customer.email = "grace@example.com"
    state.mark("customer:cus_1")
    state.save(store)
    with path.with_name(path.name + ".journal").open("ab") as journal:
        journal.write(b"\x80\x05\x95\x10")  # the start of a batch the crash cut

    assert reloaded(path)["customer:cus_1"].email == "grace@example.com"


def test_journal_batches_older_than_the_snapshot_are_not_replayed(tmp_path: Path) -> None:
    """A crash between writing a new snapshot and deleting the journal it holds: replaying that
    journal would undo the changes made since its batches."""
    path = tmp_path / "stripe.pickle"
    journal = path.with_name(path.name + ".journal")
    customer = Stored("customer", "cus_1", email="old@example.com")
    store = stored(customer)
    state = state_file(path)
    state.snapshot(store)
    customer.email = "middle@example.com"
    state.mark("customer:cus_1")
    state.save(store)
    left_behind = journal.read_bytes()
    customer.email = "new@example.com"
    state.snapshot(store)
    journal.write_bytes(left_behind)  # as if the crash came before its deletion

    assert reloaded(path)["customer:cus_1"].email == "new@example.com"


def test_a_deleted_object_stays_deleted(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    store = stored(Stored("customer", "cus_1"), Stored("customer", "cus_2"))
    state = state_file(path)
    state.snapshot(store)
    del store["customer:cus_1"]
    state.mark("customer:cus_1")
    state.save(store)

    assert set(reloaded(path)) == {"customer:cus_2"}


def test_references_inside_lists_dicts_and_tuples_are_resolved(tmp_path: Path) -> None:
    path = tmp_path / "stripe.pickle"
    charge = Stored("charge", "ch_1")
    holder = Stored("invoice", "in_1", lines=[charge], by_id={"ch_1": charge}, pair=(charge, 1))
    store = stored(charge, holder)
    state = state_file(path)
    state.snapshot(store)
    holder.status = "paid"
    state.mark("invoice:in_1")
    state.save(store)

    again = reloaded(path)
    charge_again, holder_again = again["charge:ch_1"], again["invoice:in_1"]
    assert holder_again.status == "paid"
    assert holder_again.lines[0] is charge_again
    assert holder_again.by_id["ch_1"] is charge_again
    assert holder_again.pair[0] is charge_again
