"""Rule 10: real threads, each with its own database connection, racing for one package.

SQLite (a file database) serialises writers with BEGIN IMMEDIATE and a busy timeout;
PostgreSQL takes the row locks in `locking.py`. Either way exactly one racer gets the
last session, nobody gets an error, and the ledger replays cleanly.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from tally.clinic import rules
from tally.clinic.actions import billing, catalog, fixes, sales, visits
from tally.clinic.consistency import verify_database
from tally.clinic.errors import ClinicError, Conflict, Invalid
from tally.clinic.ledger import verify
from tally.clinic.locking import lock_appointment, lock_invoice, lock_patient_packages
from tally.clinic.models import InvoiceLine, PackageLedgerEntry, PatientPackage, Payment
from tally.clinic.models.billing import LineKind
from tally.clinic.models.ledger import EntryKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("triggers_off_for_flush")]

SOLD_AT = dt.datetime(2026, 5, 4, 14, tzinfo=dt.UTC)
RACERS = 20


def run_together(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run every call in its own thread and connection, released at once by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def racer(i: int) -> None:
        try:
            connection.ensure_connection()  # connect before the start line, so the race is the action
            barrier.wait(timeout=60)
            results[i] = calls[i]()
        except BaseException as error:  # every error, whatever its kind, goes back to the test
            errors[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a racer is still running"
    return results, [e for e in errors if e is not None]


def live_uses(package: PatientPackage) -> list[PackageLedgerEntry]:
    return list(PackageLedgerEntry.objects.filter(patient_package=package, kind=EntryKind.USE,
                                                  reversed_by__isnull=True))


@pytest.fixture
def three_pack(owner, acu60):
    return catalog.do_create_package(acting_user=owner, name="3 x Acupuncture 60", price=Decimal("270.00"),
                                     sessions=3, service_ids=[acu60.pk])


@pytest.fixture
def one_left(owner, desk, patient, three_pack):
    """A paid three-session package with two sessions already used."""
    package, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=three_pack,
                                       use_first_session=False, sold_at=SOLD_AT, payment=(three_pack.price, "card"))
    sales.do_adjust(acting_user=owner, patient_package=package, change=-2, reason="two visits before Tally")
    package.refresh_from_db()
    assert package.sessions_remaining == 1
    return package


def book_visits(desk, patient, service, count: int) -> list:
    return [
        visits.do_book(acting_user=desk, patient=patient, service=service,
                       starts_at=SOLD_AT + dt.timedelta(days=1, minutes=15 * i))
        for i in range(count)
    ]


def test_twenty_check_ins_racing_for_the_last_session_give_it_to_exactly_one(desk, patient, acu60, one_left):
    appointments = book_visits(desk, patient, acu60, RACERS)

    results, errors = run_together([
        lambda a=a: visits.do_check_in(acting_user=desk, appointment=a) for a in appointments
    ])

    assert errors == []
    lines = [line for _, _, line in results]
    covered = [line for line in lines if line.covered_by_id is not None]
    charged = [line for line in lines if line.covered_by_id is None]
    assert [line.covered_by_id for line in covered] == [one_left.pk]
    assert len(charged) == RACERS - 1
    assert {line.not_covered_reason for line in charged} == {rules.PACKAGE_EXHAUSTED}
    assert all(line.amount == acu60.price for line in charged)
    one_left.refresh_from_db()
    assert one_left.sessions_used == one_left.sessions_total == 3
    assert [use.invoice_line_id for use in live_uses(one_left)] == [covered[0].pk]
    assert verify() == []


@pytest.mark.parametrize("instalment", ["half", "all"])
def test_payments_racing_to_complete_a_sale_activate_it_and_use_the_first_session_once(
    desk, patient, three_pack, instalment
):
    package, invoice = sales.do_sell_package(acting_user=desk, patient=patient, package=three_pack,
                                             use_first_session=True, sold_at=SOLD_AT)
    amount = three_pack.price / 2 if instalment == "half" else three_pack.price
    racers = 10

    _, errors = run_together([
        lambda i=i: billing.do_record_payment(acting_user=desk, invoice=invoice, amount=amount, method="card",
                                              received_at=SOLD_AT + dt.timedelta(minutes=i + 1))
        for i in range(racers)
    ])

    payments = list(Payment.objects.filter(invoice=invoice).order_by("pk"))
    assert sum(p.amount for p in payments) == three_pack.price  # never paid twice
    assert len(errors) == racers - len(payments)
    assert all(isinstance(e, Invalid) for e in errors), errors  # "more than the balance"
    package.refresh_from_db()
    assert package.activated_at == payments[-1].received_at  # the payment that completed the sale
    assert package.sessions_used == 1
    first_session = InvoiceLine.objects.get(patient_package=package, kind=LineKind.FIRST_SESSION)
    assert first_session.covered_by_id == package.pk
    assert [use.invoice_line_id for use in live_uses(package)] == [first_session.pk]
    assert verify() == []


def test_adjustments_racing_check_ins_keep_the_count_between_0_and_total(
    owner, desk, patient, acu60, one_left
):
    appointments = book_visits(desk, patient, acu60, 10)
    check_ins = [lambda a=a: visits.do_check_in(acting_user=desk, appointment=a) for a in appointments]
    adjustments = [
        lambda change=change: sales.do_adjust(acting_user=owner, patient_package=one_left, change=change,
                                              reason="racing correction")
        for change in [-1, +1] * 5  # -1 uses a session, +1 gives one back
    ]

    results, errors = run_together(check_ins + adjustments)

    assert all(result is not None for result in results[: len(check_ins)])  # no check-in failed
    assert all(isinstance(e, Invalid) for e in errors), errors  # only adjustments out of 0..total
    one_left.refresh_from_db()
    assert 0 <= one_left.sessions_used <= one_left.sessions_total
    assert verify() == []
    lines = InvoiceLine.objects.filter(appointment__in=appointments)
    assert lines.count() == len(appointments)  # every check-in charged its visit
    covered = [line.pk for line in lines if line.covered_by_id is not None]
    assert sorted(use.invoice_line_id for use in live_uses(one_left)) == sorted(covered)
    assert {line.not_covered_reason for line in lines if line.covered_by_id is None} <= {rules.PACKAGE_EXHAUSTED}
    adjusted = sum(e.change for e in PackageLedgerEntry.objects.filter(patient_package=one_left,
                                                                       kind=EntryKind.ADJUSTMENT))
    assert one_left.sessions_used == len(covered) - adjusted
    entries = PackageLedgerEntry.objects.filter(patient_package=one_left).order_by("seq")
    assert all(0 <= e.used_after <= e.sessions_total for e in entries)
    assert [e.seq for e in entries] == list(range(1, one_left.ledger_seq + 1))


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
def test_a_check_in_does_not_wait_for_another_patients_visit_of_the_same_service(
    desk, patient, acu60, settings
):
    """PostgreSQL: locking an appointment locks that row only, not the patient and service rows
    its select_related joins in (SQLite serialises every writer, so there is nothing to show)."""
    settings.TALLY_LOCK_TIMEOUT_MS = 2000  # a wait would end in Conflict after 2 s
    other = catalog.do_create_patient(acting_user=desk, first_name="Sam", last_name="Other")
    mine, theirs = (visits.do_book(acting_user=desk, patient=p, service=acu60, starts_at=SOLD_AT)
                    for p in (patient, other))
    locked, done = threading.Event(), threading.Event()

    def hold_my_visit() -> None:
        with transaction.atomic():
            lock_appointment(mine.pk)
            locked.set()
            done.wait(timeout=10)

    def check_in_theirs() -> Any:
        locked.wait(timeout=10)
        try:
            return visits.do_check_in(acting_user=desk, appointment=theirs)
        finally:
            done.set()

    _, errors = run_together([hold_my_visit, check_in_theirs])

    assert errors == []


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
def test_a_payment_using_the_first_session_on_a_charged_visit_cannot_deadlock(desk, patient, acu60, three_pack):
    """PostgreSQL: the payment that activates a sale may cover the named visit's charge on
    another invoice, so it needs that invoice after the package locks, against the usual
    order (invoice, then packages). It must not wait there: an action on that invoice
    holding it and waiting for the packages would close a cycle (a deadlock is a 500)."""
    appointment = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=SOLD_AT)
    _, visit_invoice, _ = visits.do_check_in(acting_user=desk, appointment=appointment)
    _, sale_invoice = sales.do_sell_package(acting_user=desk, patient=patient, package=three_pack,
                                            use_first_session=True, first_session_appointment=appointment,
                                            sold_at=SOLD_AT)
    visit_invoice_locked, payment_done = threading.Event(), threading.Event()

    def pay_the_sale() -> Any:
        visit_invoice_locked.wait(timeout=10)
        try:
            return billing.do_record_payment(acting_user=desk, invoice=sale_invoice, amount=three_pack.price,
                                             method="card", received_at=SOLD_AT)
        finally:
            payment_done.set()

    def edit_the_visit_invoice() -> None:
        """What every action on an invoice does: lock it, then the patient's packages."""
        with transaction.atomic():
            lock_invoice(visit_invoice.pk)
            visit_invoice_locked.set()
            until_the_other_waits_for_a_lock(payment_done)
            lock_patient_packages(patient.pk)

    _, errors = run_together([pay_the_sale, edit_the_visit_invoice])

    assert all(isinstance(e, ClinicError) for e in errors), errors  # a 409 "try again", never a deadlock
    assert verify() == []


def until_the_other_waits_for_a_lock(other_done: threading.Event) -> None:
    """Hold what this thread has locked until another session waits for a lock (or the other
    thread is done): then the race the test is about is really happening."""
    for _ in range(100):
        if other_done.is_set() or waiting_for_a_lock():
            break
        time.sleep(0.05)


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        return cursor.fetchone()[0] > 0


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
def test_a_fix_racing_the_removal_of_its_line_never_covers_a_removed_line(desk, patient, acu60, acu90, one_left):
    """PostgreSQL: apply_to_line reads its line before it takes the invoice lock. A removal
    holding that lock commits while the fix waits: the fix must see the line is gone after
    the lock, not use a session for a line no longer on the invoice."""
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)],
                                        issued_at=SOLD_AT)  # the wrong service: not covered
    line = invoice.lines.get()
    assert line.covered_by_id is None
    removal_locked, fix_done = threading.Event(), threading.Event()

    def remove_the_line() -> None:
        with transaction.atomic():
            locked = lock_invoice(invoice.pk)
            removal_locked.set()
            until_the_other_waits_for_a_lock(fix_done)
            lock_patient_packages(patient.pk)
            billing.remove_line(InvoiceLine.objects.select_related("invoice").get(pk=line.pk), by=desk,
                                reason="charged twice")
            assert locked.pk == invoice.pk

    def apply_the_fix() -> Any:
        removal_locked.wait(timeout=10)
        try:
            return fixes.do_apply_to_line(acting_user=desk, line_id=line.pk, patient_id=patient.pk,
                                          service_id=acu60.pk)
        finally:
            fix_done.set()

    _, errors = run_together([remove_the_line, apply_the_fix])

    assert all(isinstance(e, ClinicError) for e in errors), errors
    assert live_uses(one_left) == []
    assert verify() == []


# --- the last session taken at once by two different paths (rule 10 beyond check-ins) ---
#
# Each race below runs on both databases and must end with the session used once, the other
# racers charged normally (or refused with a 409, never a 500), `tally verify` clean, and no
# wait past the lock timeout (2 s here: a deadlock would be a 409 after it, or PostgreSQL's
# deadlock error, a 500).

LOCK_TIMEOUT_MS = 2000


@pytest.fixture
def short_lock_timeout(settings):
    settings.TALLY_LOCK_TIMEOUT_MS = LOCK_TIMEOUT_MS


def race(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """`run_together`, which must finish well inside the lock timeout and raise nothing but
    the clinic's own refusals."""
    started = time.monotonic()
    results, errors = run_together(calls)
    assert time.monotonic() - started < 5, "a racer waited past the lock timeout"
    assert all(isinstance(e, ClinicError) for e in errors), errors
    return results, errors


def assert_clean() -> None:
    assert verify_database() == []


def covered_lines(package: PatientPackage) -> list[InvoiceLine]:
    return list(InvoiceLine.objects.filter(covered_by=package, removed_at__isnull=True,
                                           invoice__voided_at__isnull=True))


@pytest.mark.usefixtures("short_lock_timeout")
def test_check_ins_and_manual_lines_for_other_visits_share_the_last_session(desk, patient, acu60, one_left):
    """Rule 2's two ways of using a session, at once: a check-in and a manual invoice naming
    another visit (and one naming none)."""
    appointments = book_visits(desk, patient, acu60, 6)
    invoice = billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, None)],
                                        issued_at=SOLD_AT + dt.timedelta(days=1))  # takes the last session
    billing.do_remove_line(acting_user=desk, invoice=invoice, line_id=invoice.lines.get().pk)  # and gives it back
    checked_in, charged_by_hand = appointments[:3], appointments[3:]
    calls = [lambda a=a: visits.do_check_in(acting_user=desk, appointment=a)[2] for a in checked_in]
    calls += [lambda a=a: billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, a)],
                                                    issued_at=a.starts_at).lines.get() for a in charged_by_hand[:2]]
    calls += [lambda a=charged_by_hand[2]: billing.do_add_line(acting_user=desk, invoice=invoice, service=acu60,
                                                               appointment=a)]

    results, errors = race(calls)

    assert errors == []
    assert [line.covered_by_id for line in results].count(one_left.pk) == 1
    assert {line.not_covered_reason for line in results if line.covered_by_id is None} == {rules.PACKAGE_EXHAUSTED}
    one_left.refresh_from_db()
    assert one_left.sessions_used == 3 and len(live_uses(one_left)) == 1
    assert_clean()


@pytest.mark.usefixtures("short_lock_timeout")
def test_check_ins_and_the_apply_to_line_fix_share_the_last_session(desk, patient, acu60, acu90, one_left):
    """The investigator's fix (a line charged the wrong service, re-charged as the package's and
    paid via it) racing check-ins of other visits for the one session left."""
    wrong = [billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu90, None)],
                                       issued_at=SOLD_AT + dt.timedelta(days=1)).lines.get() for _ in range(3)]
    appointments = book_visits(desk, patient, acu60, 3)
    calls = [lambda a=a: visits.do_check_in(acting_user=desk, appointment=a)[2] for a in appointments]
    calls += [lambda line=line: fixes.do_apply_to_line(acting_user=desk, line_id=line.pk, patient_id=patient.pk,
                                                       service_id=acu60.pk) for line in wrong]

    results, errors = race(calls)

    # A fix that finds the session gone says so (409: no package can cover the line).
    assert all("no session left" in e.message for e in errors), errors
    check_in_lines = [line for line in results[:3] if line is not None]
    fixed = [r for r in results[3:] if r is not None]
    assert len(check_in_lines) == 3 and all(r.applied for r in fixed)
    assert sum(line.covered_by_id == one_left.pk for line in check_in_lines) + len(fixed) == 1
    assert len(errors) == len(wrong) - len(fixed)
    one_left.refresh_from_db()
    assert one_left.sessions_used == 3 and len(covered_lines(one_left)) == 1
    assert_clean()


@pytest.mark.usefixtures("short_lock_timeout")
@pytest.mark.parametrize("named", [False, True], ids=["no visit named", "the sale names a racing visit"])
def test_check_ins_and_the_payment_that_uses_a_ticked_first_session_share_it(owner, desk, patient, acu60, named):
    """Rule 5 at rule 10: a one-session package sold with Use first session, unpaid; the payment
    completing it uses that session while visits are checked in. Whatever the order, one
    session is used: by the sale's first session, or (the sale named that visit) by the
    visit's own charge, never both; the other visits are charged normally."""
    single = catalog.do_create_package(acting_user=owner, name="1 x Acupuncture 60", price=Decimal("90.00"),
                                       sessions=1, service_ids=[acu60.pk])
    appointments = book_visits(desk, patient, acu60, 4)
    package, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=single, use_first_session=True,
                                          first_session_appointment=appointments[0] if named else None,
                                          sold_at=SOLD_AT)
    calls = [lambda a=a: visits.do_check_in(acting_user=desk, appointment=a)[2] for a in appointments]
    calls.append(lambda: billing.do_record_payment(acting_user=desk, invoice=sale, amount=single.price,
                                                   method="card", received_at=SOLD_AT + dt.timedelta(hours=1)))

    _, errors = race(calls)

    assert errors == []
    package.refresh_from_db()
    assert package.activated_at is not None and package.sessions_used == 1
    [use] = live_uses(package)
    if named:
        assert use.invoice_line.appointment_id == appointments[0].pk  # the visit, counted once
    charges = InvoiceLine.objects.filter(appointment__in=appointments, kind=LineKind.SERVICE)
    assert charges.count() == len(appointments)
    assert {line.not_covered_reason for line in charges if line.covered_by_id is None} <= {
        rules.PACKAGE_NOT_PAID, rules.PACKAGE_EXHAUSTED}
    assert_clean()


@pytest.mark.usefixtures("short_lock_timeout")
def test_undoing_a_check_in_while_other_visits_check_in_gives_its_session_to_one_at_most(desk, patient, acu60,
                                                                                        one_left):
    """The session an undo gives back (rule 7) is taken by at most one racing check-in; if the
    check-ins come first they are charged normally and the session stays free."""
    first, *others = book_visits(desk, patient, acu60, 5)
    _, _, line = visits.do_check_in(acting_user=desk, appointment=first)
    assert line.covered_by_id == one_left.pk  # the last session
    calls = [lambda: visits.do_undo_check_in(acting_user=desk, appointment=first)]
    calls += [lambda a=a: visits.do_check_in(acting_user=desk, appointment=a)[2] for a in others]

    results, errors = race(calls)

    assert errors == []
    covered = [ln for ln in results[1:] if ln.covered_by_id is not None]
    assert len(covered) <= 1
    one_left.refresh_from_db()
    assert one_left.sessions_used == 2 + len(covered)
    assert [use.invoice_line_id for use in live_uses(one_left)] == [ln.pk for ln in covered]
    assert_clean()


@pytest.mark.usefixtures("short_lock_timeout")
def test_a_no_show_and_a_charge_naming_the_same_visit_count_it_once(owner, desk, patient, acu60, one_left):
    """Rules 2 and 13 at once: the no-show (the policy on) and a manual charge of the same
    visit both lock the visit first. Whichever is first counts it; the no-show then uses
    nothing, or the charge is refused (409: undo the no-show first)."""
    catalog.do_update_clinic(acting_user=owner, changes={"no_show_uses_session": True})
    one_left.refresh_from_db()
    sales.do_adjust(acting_user=owner, patient_package=one_left, change=2, reason="room for both")
    [appointment] = book_visits(desk, patient, acu60, 1)
    calls = [
        lambda: visits.do_mark_no_show(acting_user=desk, appointment=appointment),
        lambda: billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                          issued_at=appointment.starts_at),
        lambda: billing.do_create_invoice(acting_user=desk, patient=patient, lines=[(acu60, appointment)],
                                          issued_at=appointment.starts_at),
    ]

    results, errors = race(calls)

    assert results[0] is not None  # the no-show is always recorded
    assert all(isinstance(e, Conflict) and "one visit uses one session" in e.message for e in errors), errors
    visit_uses = PackageLedgerEntry.objects.filter(appointment_id=appointment.pk, kind=EntryKind.USE,
                                                   reversed_by__isnull=True)
    assert visit_uses.count() == 1
    one_left.refresh_from_db()
    assert one_left.sessions_used == 1
    assert_clean()


def paused_after_using_a_first_session(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Rule 5's first session, once used, waits until the other racer waits for a lock; returns
    (used, other_done) for `once_used` to start the other racer at that moment."""
    used, other_done = threading.Event(), threading.Event()
    use_first_session = billing.use_first_session

    def use_it_then_wait(*args: Any, **kwargs: Any) -> None:
        use_first_session(*args, **kwargs)
        used.set()
        until_the_other_waits_for_a_lock(other_done)

    monkeypatch.setattr(billing, "use_first_session", use_it_then_wait)
    return used, other_done


def once_used(events: tuple[threading.Event, threading.Event], action: Callable[[], Any]) -> Callable[[], Any]:
    used, other_done = events

    def run() -> Any:
        used.wait(timeout=10)
        try:
            return action()
        finally:
            other_done.set()

    return run


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
@pytest.mark.usefixtures("short_lock_timeout")
def test_a_check_in_waiting_while_the_payment_uses_its_visits_first_session_counts_the_visit_once(
        desk, patient, acu60, ten_pack, monkeypatch):
    """The payment that completes a sale naming this visit for its first session uses that
    session (rule 5) under the package locks, not the visit's. A check-in of the visit that
    read the visit's lines before that payment committed, and waited for the packages, must
    not charge the visit a second session nor drop a first session that is used now."""
    [appointment] = book_visits(desk, patient, acu60, 1)
    package, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                          first_session_appointment=appointment, sold_at=SOLD_AT)
    paused = paused_after_using_a_first_session(monkeypatch)

    def pay() -> Any:
        return billing.do_record_payment(acting_user=desk, invoice=sale, amount=ten_pack.price, method="card",
                                         received_at=SOLD_AT + dt.timedelta(hours=1))

    _, errors = race([pay, once_used(paused, lambda: visits.do_check_in(acting_user=desk, appointment=appointment))])

    package.refresh_from_db()
    visit_uses = PackageLedgerEntry.objects.filter(appointment_id=appointment.pk, kind=EntryKind.USE,
                                                   reversed_by__isnull=True)
    assert visit_uses.count() == package.sessions_used == 1, (errors, list(visit_uses.values()))
    assert_clean()


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
@pytest.mark.usefixtures("short_lock_timeout")
def test_a_check_in_racing_a_sale_that_names_its_visit_for_the_first_session_counts_the_visit_once(
        desk, patient, acu60, ten_pack, one_left, monkeypatch):
    """A paid sale ticked for this visit uses its first session at once (rule 5). A check-in of
    the visit that read the visit's lines before the sale committed, then waited for the
    packages (the patient holds another one), would charge the visit to that other package too:
    two sessions for one visit. The sale locks the visit it names first, as every charge does."""
    [appointment] = book_visits(desk, patient, acu60, 1)
    paused = paused_after_using_a_first_session(monkeypatch)

    def sell() -> Any:
        return sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                     first_session_appointment=appointment, sold_at=SOLD_AT,
                                     payment=(ten_pack.price, "card"))

    _, errors = race([sell, once_used(paused, lambda: visits.do_check_in(acting_user=desk, appointment=appointment))])

    assert errors == []
    visit_uses = PackageLedgerEntry.objects.filter(appointment_id=appointment.pk, kind=EntryKind.USE,
                                                   reversed_by__isnull=True)
    assert visit_uses.count() == 1, list(visit_uses.values("patient_package_id", "invoice_line__kind"))
    sold = PatientPackage.objects.get(sale_invoice__isnull=False, sold_at=SOLD_AT, package=ten_pack)
    one_left.refresh_from_db()
    # As the sale then the check-in, one after the other: the first session moves to the visit's
    # charge and rule 6 picks the package for it (the older one); one session in all.
    assert one_left.sessions_used + sold.sessions_used == 2 + 1
    assert_clean()


@pytest.mark.postgres_only  # row locks; SQLite queues every writer by design
@pytest.mark.usefixtures("short_lock_timeout")
def test_undoing_a_check_in_while_the_payment_gives_its_first_session_to_the_visit_keeps_the_sales_session(
        desk, patient, acu60, ten_pack, monkeypatch):
    """A visit checked in while its sale (ticked for it) was unpaid is charged in full; the
    payment completing the sale then gives the first session to that charge (rule 5). Undone
    after the payment, the check-in gives the session back to the sale (used again). An undo
    that read the visit's lines before the payment committed, and waited for the invoice it
    covered, gave back the charge's session and left the sale with none."""
    [appointment] = book_visits(desk, patient, acu60, 1)
    package, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=True,
                                          first_session_appointment=appointment, sold_at=SOLD_AT)
    _, _, charge = visits.do_check_in(acting_user=desk, appointment=appointment)
    assert charge.covered_by_id is None  # the sale is not paid yet
    paused = paused_after_using_a_first_session(monkeypatch)

    def pay() -> Any:
        return billing.do_record_payment(acting_user=desk, invoice=sale, amount=ten_pack.price, method="card",
                                         received_at=SOLD_AT + dt.timedelta(hours=1))

    _, errors = race([pay, once_used(paused, lambda: visits.do_undo_check_in(acting_user=desk,
                                                                              appointment=appointment))])

    assert errors == []
    package.refresh_from_db()
    assert package.activated_at is not None
    assert package.sessions_used == 1  # the sale's first session, back on the sale
    [use] = live_uses(package)
    assert use.invoice_line.kind == LineKind.FIRST_SESSION and use.invoice_line.invoice_id == sale.pk
    assert_clean()
