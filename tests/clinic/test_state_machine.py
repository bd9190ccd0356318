"""Random sequences of front-desk actions never break a package's count.

A Hypothesis state machine sells, pays, books, checks in, undoes, marks no-shows,
deletes, invoices, voids, cancels, adjusts and extends, with the clock jumping
forward and back inside a 40-day window (so sales are paid late, visits are
invoiced before a purchase, and 5-day packages expire). Refusals (ClinicError) are
expected; any other exception is a bug. After every step the invariants below must
hold, and every charge is compared with an independent oracle of rules 1-6 run on
the state just before the action.

Each example runs in a savepoint that is rolled back at its end, so examples start
clean and cost only the rows they create.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict, namedtuple
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.db.models import F, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from tally.clinic import rules
from tally.clinic.actions import billing, catalog, sales, visits
from tally.clinic.actions.coverage import GIVEN_TO_VISIT
from tally.clinic.errors import ClinicError, Conflict, Invalid, NotFound
from tally.clinic.investigator.explain import explain
from tally.clinic.investigator.loader import load_history
from tally.clinic.investigator.service import apply_fix
from tally.clinic.ledger import live_use_for_line, verify
from tally.clinic.models import (
    Appointment,
    Invoice,
    InvoiceLine,
    Package,
    PackageLedgerEntry,
    PatientPackage,
    Service,
    Staff,
)
from tally.clinic.models.billing import ZERO, LineKind
from tally.clinic.models.ledger import EntryKind
from tally.clinic.models.scheduling import AppointmentStatus

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
EXAMPLES = int(os.environ.get("TALLY_STATEFUL_EXAMPLES", 200 if IN_CI else 25))
STEPS = int(os.environ.get("TALLY_STATEFUL_STEPS", 30 if IN_CI else 20))

NY = ZoneInfo("America/New_York")  # the `clinic` fixture's time zone
# New York changes to summer time on 9 March 2025: local dates near midnight shift by an hour.
WINDOW_START = dt.datetime(2025, 3, 1, 5, tzinfo=dt.UTC)
WINDOW_HOURS = 40 * 24
CENT = Decimal("0.01")

PATIENT = st.integers(0, 1)
SERVICE = st.sampled_from([0, 0, 0, 1, 2])  # mostly the service both packages cover
CLOCK_STEP = st.integers(-2 * 24, 4 * 24)  # hours the clock moves before an action: mostly on


def local_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(NY).date()


def attempt(action: Any, **kwargs: Any) -> tuple[Any, ClinicError | None]:
    """Run an action; a refusal is an answer, any other exception fails the test."""
    try:
        return action(**kwargs), None
    except ClinicError as error:
        return None, error


# --- an oracle of rules 1-6, independent of tally.clinic.rules -------------------------


@dataclass
class Facts:
    id: int
    patient_id: int
    eligible: frozenset[int]
    sold_at: dt.datetime
    activated: bool
    cancelled: bool
    used: int
    total: int
    expires_at: dt.datetime | None

    def reasons(self, service_id: int, day: dt.date) -> set[str]:
        """Every reason this package cannot cover the service on `day`; empty = it can."""
        if service_id not in self.eligible:
            return {rules.SERVICE_NOT_IN_PACKAGE}
        found = set()
        if self.cancelled:
            found.add(rules.PACKAGE_CANCELLED)
        if not self.activated:
            found.add(rules.PACKAGE_NOT_PAID)
        if day < local_day(self.sold_at):
            found.add(rules.CHARGED_BEFORE_PURCHASE)
        if self.expires_at is not None and day > local_day(self.expires_at):
            found.add(rules.PACKAGE_EXPIRED)
        if self.used >= self.total:
            found.add(rules.PACKAGE_EXHAUSTED)
        return found


def expected_coverage(
    snap: dict[int, Facts], patient_id: int, service_id: int, day: dt.date
) -> tuple[int | None, set[str | None]]:
    """(the package that must cover, or None; the acceptable not_covered_reason values)."""
    held = [f for f in snap.values() if f.patient_id == patient_id]
    usable = [f for f in held if not f.reasons(service_id, day)]
    if usable:
        expires_first = min(
            usable,
            key=lambda f: (local_day(f.expires_at) if f.expires_at else dt.date.max, f.sold_at, f.id),
        )
        return expires_first.id, {None}
    if not held:
        return None, {None}
    eligible = [f for f in held if service_id in f.eligible]
    if not eligible:
        return None, {rules.SERVICE_NOT_IN_PACKAGE}
    latest = max(eligible, key=lambda f: (f.sold_at, f.id))
    return None, set(latest.reasons(service_id, day))


def expected_line(snap: dict[int, Facts], patient_id: int, service_id: int, day: dt.date,
                  moved_from: list[int]) -> tuple[int | None, set[str | None], list[int]]:
    """One charge: (the package that must cover it, or None; the acceptable reasons; the
    packages whose first session for the visit moves to it). Updates `snap` for the moves."""
    # A cancelled package's first session stays on the sale for a service it does not
    # cover: used before the cancellation, it stays used (rule 11).
    moved_from = [pid for pid in moved_from if not snap[pid].cancelled or service_id in snap[pid].eligible]
    for package_id in moved_from:
        snap[package_id].used -= 1
    covered, reasons = expected_coverage(snap, patient_id, service_id, day)
    if covered is None:  # rule 5: the sale's first session for this visit moves to its line
        covered = next((pid for pid in moved_from if service_id in snap[pid].eligible), None)
    else:  # a cancelled package's moves even so: given back, it could never be used again
        covered = next((pid for pid in moved_from if snap[pid].cancelled), covered)
    return covered, reasons, moved_from


def unpays_a_live_sale(invoice: Invoice, service: Service, appointment_id: int | None, snap: dict[int, Facts],
                       released: dict[int, list[int]]) -> bool:
    """Rule 1 after activation: charging `service` on `invoice` would leave the sale of a
    package that was activated and is not cancelled with a balance (a charge the package
    covers costs nothing; an overpaid invoice pays for one up to its overpayment)."""
    if not PatientPackage.objects.filter(sale_invoice=invoice, activated_at__isnull=False,
                                         cancelled_at__isnull=True).exists():
        return False
    copied = {pid: replace(facts) for pid, facts in snap.items()}
    covered, _, _ = expected_line(copied, invoice.patient_id, service.pk, local_day(invoice.issued_at),
                                  list(released.get(appointment_id, [])) if appointment_id else [])
    return billing.load_invoice(invoice.pk).balance + (ZERO if covered is not None else service.price) > ZERO


def snapshot() -> dict[int, Facts]:
    eligible: dict[int, set[int]] = defaultdict(set)
    through = PatientPackage.eligible_services.through.objects.values_list("patientpackage_id", "service_id")
    for package_id, service_id in through:
        eligible[package_id].add(service_id)
    return {
        p.pk: Facts(
            id=p.pk,
            patient_id=p.patient_id,
            eligible=frozenset(eligible[p.pk]),
            sold_at=p.sold_at,
            activated=p.activated_at is not None,
            cancelled=p.cancelled_at is not None,
            used=p.sessions_used,
            total=p.sessions_total,
            expires_at=p.expires_at,
        )
        for p in PatientPackage.objects.all()
    }


def last_id(queryset: QuerySet) -> int:
    return queryset.aggregate(last=Max("pk"))["last"] or 0


def reversals_underflow(package_ids: list[int]) -> bool:
    """Whether giving these sessions back would leave a package below 0 used: possible after
    an owner's +n adjustment, and then rule 9 refuses the undo (Invalid) instead."""
    given_back: dict[int, int] = defaultdict(int)
    for package_id in package_ids:
        given_back[package_id] += 1
    used = dict(PatientPackage.objects.filter(pk__in=given_back).values_list("pk", "sessions_used"))
    return any(used[pid] < n for pid, n in given_back.items())


def live_uses_of(appointment_id: int) -> QuerySet:
    return PackageLedgerEntry.objects.filter(
        appointment_id=appointment_id, kind=EntryKind.USE, reversed_by__isnull=True
    )


def would_count_a_counted_visit(appointment_id: int, patient_id: int, service_id: int, day: dt.date,
                                snap: dict[int, Facts], released: dict[int, list[int]]) -> bool:
    """Whether a charge naming this visit would use a session (rules 1-6, after rule 5 moves the
    sale's first session for it) while the visit's own charge, or its no-show under the policy,
    counts it already: one visit, one session, so the charge is refused."""
    counted = live_uses_of(appointment_id).filter(
        Q(invoice_line__isnull=True) | Q(invoice_line__kind=LineKind.SERVICE)).exists()
    if not counted:
        return False
    copied = {pid: replace(facts) for pid, facts in snap.items()}
    covered, _, _ = expected_line(copied, patient_id, service_id, day, list(released.get(appointment_id, [])))
    return covered is not None


def pending_sales() -> dict[int, bool]:
    """The packages waiting for their sale to be paid (not cancelled), each with whether its
    activation would use the ticked first session (rule 5): not when that session is used,
    removed, or its visit was counted by another charge already."""
    return {
        p.pk: p.use_first_session and InvoiceLine.objects.filter(
            patient_package=p, kind=LineKind.FIRST_SESSION, removed_at__isnull=True, covered_by__isnull=True
        ).exists() and not (p.first_session_appointment_id and live_uses_of(p.first_session_appointment_id).exists())
        for p in PatientPackage.objects.filter(activated_at__isnull=True, cancelled_at__isnull=True)
    }


def balances(invoice_ids: set[int]) -> dict[int, Decimal]:
    """Each invoice's balance as `load_invoice` reads it, in three queries however many invoices:
    the invariants run after every step, and one load per package was most of a step's time on
    PostgreSQL."""
    return {invoice.pk: invoice.balance for invoice in billing.invoices_with_lines().filter(pk__in=invoice_ids)}


def paid_off(pending: dict[int, bool]) -> set[int]:
    """Of these pending packages, those whose sale invoice now has nothing left to pay."""
    sales_of = dict(PatientPackage.objects.filter(pk__in=pending).values_list("pk", "sale_invoice_id"))
    balance = balances(set(sales_of.values()))
    return {pk for pk, invoice_id in sales_of.items() if balance[invoice_id] <= ZERO}


class PreparedRead:
    """A read compiled to SQL once per example and run after every step: for these tiny
    tables, compiling the same ORM query thousands of times costs more than running it."""

    def __init__(self, queryset: QuerySet, *fields: str) -> None:
        self.row = namedtuple("Row", [f.replace("__", "_") for f in fields])  # type: ignore[misc]
        self.compiler = queryset.values_list(*fields).query.get_compiler(using=queryset.db)
        self.sql, self.params = self.compiler.as_sql()

    def rows(self) -> list[Any]:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            fetched = cursor.fetchall()
        # results_iter applies the field converters (datetimes, decimals, JSON) to our rows.
        return [self.row(*r) for r in self.compiler.results_iter(results=[fetched])]


class InvariantReads:
    def __init__(self) -> None:
        self.packages = PreparedRead(PatientPackage.objects.order_by("pk"), "pk", "patient_id", "sessions_used",
                                     "sessions_total", "activated_at")
        self.entries = PreparedRead(
            PackageLedgerEntry.objects.order_by("patient_package_id", "seq"), "pk", "patient_package_id", "seq",
            "kind", "change", "used_after", "invoice_line_id", "reverses_id", "reason", "appointment_id", "appointment__status",
            "appointment__deleted_at", "invoice_line__kind",
        )
        self.lines = PreparedRead(
            InvoiceLine.objects.order_by("pk"), "pk", "kind", "invoice__patient_id", "invoice__voided_at",
            "removed_at", "covered_by_id", "covered_by__patient_id", "patient_package_id", "not_covered_reason",
            "coverage_decision", "amount", "list_price", "session_number", "sessions_left",
            "covered_by__sessions_total",
        )


# --- the machine -------------------------------------------------------------------------


@dataclass
class Catalog:
    owner: Staff
    desk: Staff
    services: list[Service]  # two eligible somewhere, one in no package
    templates: list[Package]  # one without expiry, one valid for 5 days


class PackageTrackingMachine(RuleBasedStateMachine):
    catalog: ClassVar[Catalog]

    appointments = Bundle("appointments")
    packages = Bundle("packages")

    def __init__(self) -> None:
        super().__init__()
        # One savepoint per example, rolled back in teardown: every example starts clean.
        self._example = transaction.atomic()
        self._example.__enter__()
        self.clock = 5 * 24
        self.no_show_policy = False
        self.expected_used: dict[int, int] = {}
        self.seq_at_cancel: dict[int, int] = {}
        self.reads = InvariantReads()
        desk = self.catalog.desk
        self.patients = [
            catalog.do_create_patient(acting_user=desk, first_name=name, last_name="Example")
            for name in ("Ana", "Ben")
        ]

    def teardown(self) -> None:
        try:
            self.the_investigator_accounts_for_every_visit()
        finally:
            transaction.set_rollback(True)
            self._example.__exit__(None, None, None)

    def the_investigator_accounts_for_every_visit(self) -> None:
        """Issue 3's property, once per random history: the timeline marks every attended visit
        counted or gives its reason, and the investigator's count is the ledger's."""
        for patient in self.patients:
            investigations, _ = explain(load_history(patient.pk))
            for package_id, inv in investigations.items():
                replayed = -sum(PackageLedgerEntry.objects.filter(patient_package_id=package_id)
                                .values_list("change", flat=True))
                assert inv.summary["sessions_used"] == replayed, (package_id, inv.summary, replayed)
                assert "LEDGER_MISMATCH" not in {f.code for f in inv.findings}, inv.findings
                for event in inv.timeline:
                    if event["kind"] == "visit" and event["status"] == "attended":
                        assert event["counted"] or event["reason"], event

    # helpers

    def tick(self, hours: int) -> dt.datetime:
        self.clock = min(max(self.clock + hours, 0), WINDOW_HOURS)
        return WINDOW_START + dt.timedelta(hours=self.clock)

    def pick(self, data: st.DataObject, queryset: QuerySet, label: str) -> Any:
        choices = list(queryset.order_by("pk"))
        if not choices:
            return None
        return data.draw(st.sampled_from(choices), label=label)

    def releases_for(self, appointment_ids: list[int]) -> dict[int, list[int]]:
        """First-session lines that charging these visits gives back (visit -> package ids)."""
        released: dict[int, list[int]] = defaultdict(list)
        lines = InvoiceLine.objects.filter(
            appointment_id__in=appointment_ids, kind=LineKind.FIRST_SESSION, removed_at__isnull=True,
            invoice__voided_at__isnull=True,
        )
        for line in lines:
            use = live_use_for_line(line)
            if use is not None:
                released[line.appointment_id].append(use.patient_package_id)
        return released

    def first_sessions_given_back(self, appointment: Appointment, reversed_now: list[int]) -> set[int]:
        """The packages whose sale's first session a check-in of this visit moved onto the visit,
        or dropped because the visit was counted already, or whose sale after the check-in gave
        it to the visit's charge: undoing the check-in gives it back to
        the sale, unless the sale holds a live first-session line again, or it was voided. A
        package cancelled since gets it back only from the visit's own line (`reversed_now`):
        the session moves back and the count stays (rule 11), never a new use."""
        moved = InvoiceLine.objects.filter(
            appointment=appointment, kind=LineKind.FIRST_SESSION, removed_at__isnull=False,
            removal_reason__in=GIVEN_TO_VISIT, invoice__voided_at__isnull=True,
        ).values_list("patient_package_id", "patient_package__cancelled_at")
        live = InvoiceLine.objects.filter(
            kind=LineKind.FIRST_SESSION, removed_at__isnull=True, invoice__voided_at__isnull=True,
        ).values_list("patient_package_id", flat=True)
        back = {pid for pid, cancelled_at in moved if cancelled_at is None or pid in reversed_now}
        return back - set(live)

    def settle_paid_off(self, pending: dict[int, bool]) -> None:
        """Rule 1 when a step lowered a sale invoice's total instead of paying it: every package
        that was pending and whose sale now has nothing left to pay was activated by the step
        (and used its ticked first session, rule 5); the others are still pending."""
        done = paid_off(pending)
        for package in PatientPackage.objects.filter(pk__in=pending):
            if package.pk in done:
                assert package.activated_at is not None, f"package {package.pk}'s sale is paid off, still pending"
                if pending[package.pk]:
                    self.expected_used[package.pk] += 1
            else:
                assert package.activated_at is None, f"package {package.pk} activated with its sale unpaid"

    def check_charges(self, since_line: int, snap: dict[int, Facts],
                      released: dict[int, list[int]]) -> list[InvoiceLine]:
        """Compare every service line charged since `since_line` with the oracle, in order."""
        lines = list(
            InvoiceLine.objects.filter(pk__gt=since_line, kind=LineKind.SERVICE)
            .select_related("invoice").order_by("pk")
        )
        for line in lines:
            day = local_day(line.invoice.issued_at)
            covered, reasons, moved_from = expected_line(
                snap, line.invoice.patient_id, line.service_id, day,
                released.pop(line.appointment_id, []) if line.appointment_id else [])
            for package_id in moved_from:
                self.expected_used[package_id] -= 1
            assert line.covered_by_id == covered, (
                f"line {line.pk} ({line.service_id} on {day}) covered by {line.covered_by_id}, "
                f"rules 1-6 say {covered}; packages: {snap}"
            )
            assert line.coverage_decision["invoice_date"] == day.isoformat()
            if covered is None:
                assert line.not_covered_reason in reasons, (line.not_covered_reason, reasons, snap)
            else:
                snap[covered].used += 1
                self.expected_used[covered] += 1
        return lines

    # rules: sales and payments

    @initialize(target=packages, templates=st.lists(st.integers(0, 1), min_size=2, max_size=2),
                use_first=st.lists(st.booleans(), min_size=2, max_size=2),
                pay=st.lists(st.sampled_from(["full", "full", "partial", "none"]), min_size=2, max_size=2))
    def open_accounts(self, templates: list[int], use_first: list[bool], pay: list[str]) -> Any:
        """Most examples start with each patient holding a package, so charges meet one."""
        sold = []
        for who in (0, 1):
            package = self.catalog.templates[templates[who]]
            payment = None
            if pay[who] != "none":
                payment = (package.price if pay[who] == "full" else (package.price / 2).quantize(CENT), "card")
            pp, _ = sales.do_sell_package(
                acting_user=self.catalog.desk, patient=self.patients[who], package=package,
                use_first_session=use_first[who], sold_at=self.tick(0), payment=payment,
            )
            self.expected_used[pp.pk] = 1 if use_first[who] and pay[who] == "full" else 0
            sold.append(pp.pk)
        return multiple(*sold)

    @rule(target=packages, who=PATIENT, template=st.integers(0, 1), use_first=st.booleans(),
          pay=st.sampled_from(["none", "partial", "full"]), hours=CLOCK_STEP,
          for_a_visit=st.sampled_from(["no", "any", "checked_in"]), data=st.data())
    def sell(self, who: int, template: int, use_first: bool, pay: str, hours: int, for_a_visit: str,
             data: st.DataObject) -> int:
        patient = self.patients[who]
        package = self.catalog.templates[template]
        sold_at = self.tick(hours)
        visit = None
        if use_first and for_a_visit != "no":
            visits_ = Appointment.objects.filter(patient=patient)
            if for_a_visit == "checked_in":  # its charge may take the first session (rule 5)
                visits_ = visits_.filter(status=AppointmentStatus.ATTENDED)
            visit = self.pick(data, visits_, "first-session visit")
        payment = None
        if pay != "none":
            payment = (package.price if pay == "full" else (package.price / 2).quantize(CENT), "card")
        counted_already = visit is not None and live_uses_of(visit.pk).exists()  # rule 5 then drops it
        sold, _ = sales.do_sell_package(
            acting_user=self.catalog.desk, patient=patient, package=package, use_first_session=use_first,
            sold_at=sold_at, first_session_appointment=visit, payment=payment,
        )
        if pay == "full":
            assert sold.activated_at == sold_at
        else:
            assert sold.activated_at is None
        self.expected_used[sold.pk] = 1 if use_first and pay == "full" and not counted_already else 0
        return sold.pk

    @rule(kind=st.sampled_from(["partial", "full", "refund_half", "refund_all"]), hours=CLOCK_STEP,
          data=st.data())
    def pay(self, kind: str, hours: int, data: st.DataObject) -> None:
        invoice = self.pick(data, Invoice.objects.all(), "invoice")
        if invoice is None:
            return
        current = billing.load_invoice(invoice.pk)
        received_at = self.tick(hours)
        amount = {
            "partial": (current.balance / 2).quantize(CENT),
            "full": current.balance,
            "refund_half": -(current.paid / 2).quantize(CENT),
            "refund_all": -current.paid,
        }[kind]
        if amount == ZERO or (kind in ("partial", "full") and amount < ZERO):
            amount = Decimal("-1.00") if kind.startswith("refund") else Decimal("1.00")
        # A payment on a sale's invoice cannot be dated before the sale (rule 1 dates activation by it).
        backdated = received_at < current.issued_at and any(
            line.kind == LineKind.PACKAGE_SALE for line in current.live_lines())
        valid = current.voided_at is None and not backdated and (
            (ZERO < amount <= current.balance) or (amount < ZERO and -amount <= current.paid)
        )
        # Rules 1 and 11: a plain refund may not leave the sale of a package that was activated
        # and is not cancelled unpaid (the package is refunded by cancelling it).
        unpays_a_sale = amount < ZERO and current.balance - amount > ZERO and PatientPackage.objects.filter(
            sale_invoice=invoice, activated_at__isnull=False, cancelled_at__isnull=True).exists()
        completes = valid and amount > ZERO and current.balance - amount <= ZERO
        pending = list(PatientPackage.objects.filter(
            sale_invoice=invoice, activated_at__isnull=True, cancelled_at__isnull=True
        ))
        first_session_due = {pk for pk, due in pending_sales().items() if due}
        _, error = attempt(billing.do_record_payment, acting_user=self.catalog.desk, invoice=invoice,
                           amount=amount, method="card", received_at=received_at, reason="patient asked")
        if not valid:
            assert isinstance(error, Invalid | Conflict), (amount, current.balance, current.paid, error)
            return
        if unpays_a_sale:
            assert isinstance(error, Conflict) and "cancel it with a refund" in error.message, error
            return
        if error is not None:
            # The only refusal of a valid payment: the first session it would use has no room
            # left, because an owner adjusted the pending package down to 0.
            assert completes and isinstance(error, Invalid), error
            assert any(p.sessions_used >= p.sessions_total for p in pending if p.pk in first_session_due)
            return
        for package in pending:
            package.refresh_from_db()
            if completes:
                assert package.activated_at == received_at
                if package.pk in first_session_due:
                    self.expected_used[package.pk] += 1
            else:
                assert package.activated_at is None

    # rules: the schedule

    @rule(target=appointments, who=PATIENT, service=SERVICE, hours=CLOCK_STEP)
    def book(self, who: int, service: int, hours: int) -> int:
        appointment = visits.do_book(acting_user=self.catalog.desk, patient=self.patients[who],
                                     service=self.catalog.services[service], starts_at=self.tick(hours))
        return appointment.pk

    @rule(visit=appointments, how=st.sampled_from(["booked", "other", "no_charges"]), other=SERVICE,
          on_open_invoice=st.booleans(), data=st.data())
    def check_in(self, visit: int, how: str, other: int, on_open_invoice: bool,
                 data: st.DataObject | None) -> None:
        appointment = Appointment.all_objects.get(pk=visit)
        invoice = None
        if on_open_invoice and how != "no_charges" and data is not None:
            invoice = self.pick(
                data, Invoice.objects.filter(patient_id=appointment.patient_id, voided_at__isnull=True), "invoice"
            )
        snap, released, since = snapshot(), self.releases_for([visit]), last_id(InvoiceLine.objects)
        underflow = reversals_underflow([p for ps in released.values() for p in ps])
        charged = list(InvoiceLine.objects.filter(
            appointment=appointment, kind=LineKind.SERVICE, removed_at__isnull=True, invoice__voided_at__isnull=True,
        ).order_by("pk"))
        entries = last_id(PackageLedgerEntry.objects)
        service = self.catalog.services[other] if how == "other" else None
        result, error = attempt(
            visits.do_check_in, acting_user=self.catalog.desk, appointment=appointment,
            service=service, no_charges=how == "no_charges", invoice=invoice,
        )
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
            return
        if appointment.status != AppointmentStatus.BOOKED:
            assert isinstance(error, Conflict), error
            return
        if charged:
            # Rule 2: a visit charged on a manual invoice has used its session already: the
            # check-in keeps that charge, or refuses to charge the visit otherwise; never twice.
            keepable = {line.pk for line in charged if (service is None or line.service_id == service.pk)
                        and (invoice is None or line.invoice_id == invoice.pk)}
            if how == "no_charges" or not keepable:
                assert isinstance(error, Conflict) and "already charged on" in error.message, error
            else:
                assert error is None, error
                assert result[2].pk in keepable and result[1].pk == result[2].invoice_id
                assert Appointment.objects.get(pk=visit).status == AppointmentStatus.ATTENDED
            assert last_id(InvoiceLine.objects) == since, "the check-in charged a charged visit again"
            assert last_id(PackageLedgerEntry.objects) == entries, "the check-in moved a count"
            return
        if how != "no_charges" and underflow:
            assert isinstance(error, Invalid), error
            return
        if invoice is not None and unpays_a_live_sale(invoice, service or appointment.service, visit, snap, released):
            # Rule 1 after activation: the charge goes on a new invoice; nothing is written.
            assert isinstance(error, Conflict) and "Charge it on a new invoice" in error.message, error
            assert last_id(InvoiceLine.objects) == since and last_id(PackageLedgerEntry.objects) == entries
            assert Appointment.objects.get(pk=visit).status == AppointmentStatus.BOOKED
            return
        assert error is None, error
        lines = self.check_charges(since, snap, released)
        assert len(lines) == (0 if how == "no_charges" else 1)

    @rule(target=appointments, who=PATIENT, service=SERVICE, charge=st.sampled_from(["booked", "other"]),
          other=SERVICE, hours=CLOCK_STEP)
    def walk_in(self, who: int, service: int, charge: str, other: int, hours: int) -> int:
        """Booked and checked in at once: the most common visit, so charges meet packages often."""
        visit = self.book(who, service, hours)
        self.check_in(visit, charge, other, on_open_invoice=False, data=None)
        return visit

    @rule(target=appointments, who=PATIENT, service=SERVICE, charged=SERVICE,
          how=st.sampled_from(["booked", "booked", "other", "no_charges"]), other=SERVICE, hours=CLOCK_STEP)
    def charged_on_a_manual_invoice_then_checked_in(self, who: int, service: int, charged: int, how: str,
                                                    other: int, hours: int) -> int:
        """Rule 2: staff charge a booked visit's service on a manual invoice (it uses the
        session), then check the visit in as usual: the check-in must not charge it again."""
        visit = self.book(who, service, hours)
        appointment = Appointment.objects.get(pk=visit)
        snap, since = snapshot(), last_id(InvoiceLine.objects)
        _, error = attempt(billing.do_create_invoice, acting_user=self.catalog.desk, patient=self.patients[who],
                           lines=[(self.catalog.services[charged], appointment)], issued_at=appointment.starts_at)
        assert error is None, error
        assert len(self.check_charges(since, snap, {})) == 1
        self.check_in(visit, how, other, on_open_invoice=False, data=None)
        return visit

    @rule(data=st.data())
    def undo_check_in(self, data: st.DataObject) -> None:
        appointment = self.pick(data, Appointment.objects.filter(status=AppointmentStatus.ATTENDED), "visit")
        if appointment is None:
            return
        charged = InvoiceLine.objects.filter(
            appointment=appointment, kind=LineKind.SERVICE, removed_at__isnull=True,
            invoice__voided_at__isnull=True,
        )
        given_back = [use.patient_package_id for line in charged if (use := live_use_for_line(line))]
        underflow = reversals_underflow(given_back)
        first_sessions_back = self.first_sessions_given_back(appointment, given_back)
        pending = pending_sales()
        _, error = attempt(visits.do_undo_check_in, acting_user=self.catalog.desk, appointment=appointment)
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
        elif appointment.status != AppointmentStatus.ATTENDED:
            assert isinstance(error, Conflict), error
        elif underflow:
            assert isinstance(error, Invalid), error
        else:
            assert error is None, error
            for package_id in given_back:
                self.expected_used[package_id] -= 1
            for package in PatientPackage.objects.filter(pk__in=first_sessions_back).order_by("pk"):
                # rule 5: the sale's first session is the sale's again, as if this visit had never
                # been checked in: used if the package is active and has a session left
                if package.activated_at is not None and self.expected_used[package.pk] < package.sessions_total:
                    self.expected_used[package.pk] += 1
            self.settle_paid_off(pending)
            assert not InvoiceLine.objects.filter(
                appointment=appointment, kind=LineKind.SERVICE, removed_at__isnull=True,
                invoice__voided_at__isnull=True,
            ).exists()

    @rule(on=st.booleans())
    def set_no_show_policy(self, on: bool) -> None:
        catalog.do_update_clinic(acting_user=self.catalog.owner, changes={"no_show_uses_session": on})
        self.no_show_policy = on

    @rule(visit=appointments)
    def no_show(self, visit: int) -> None:
        appointment = Appointment.all_objects.get(pk=visit)
        snap, since = snapshot(), last_id(PackageLedgerEntry.objects)
        counted_already = live_uses_of(visit).exists()
        _, error = attempt(visits.do_mark_no_show, acting_user=self.catalog.desk, appointment=appointment)
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
            return
        if appointment.status != AppointmentStatus.BOOKED:
            assert isinstance(error, Conflict), error
            return
        assert error is None, error
        new_entries = list(PackageLedgerEntry.objects.filter(pk__gt=since))
        covered = None
        if self.no_show_policy and not counted_already:  # one visit, one session
            covered, _ = expected_coverage(snap, appointment.patient_id, appointment.service_id,
                                           local_day(appointment.starts_at))
        if covered is None:
            assert new_entries == []
        else:
            assert [(e.kind, e.patient_package_id, e.appointment_id) for e in new_entries] == [
                (EntryKind.USE, covered, appointment.pk)
            ]
            assert "no-show" in new_entries[0].reason
            self.expected_used[covered] += 1

    @rule(visit=appointments)
    def undo_no_show(self, visit: int) -> None:
        """The patient arrived late after all: the visit is booked again, and a session the
        no-show policy used comes back (rule 7), whatever the policy says now."""
        appointment = Appointment.all_objects.get(pk=visit)
        given_back = list(live_uses_of(visit).filter(invoice_line__isnull=True)
                          .values_list("patient_package_id", flat=True))
        counted_otherwise = live_uses_of(visit).filter(invoice_line__isnull=False).exists()
        first_sessions_back = (self.first_sessions_given_back(appointment, given_back)
                               if given_back and not counted_otherwise else set())
        _, error = attempt(visits.do_undo_no_show, acting_user=self.catalog.desk, appointment=appointment)
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
            return
        if appointment.status != AppointmentStatus.NO_SHOW:
            assert isinstance(error, Conflict), error
            return
        assert error is None, error
        for package_id in given_back:
            self.expected_used[package_id] -= 1
        for package in PatientPackage.objects.filter(pk__in=first_sessions_back).order_by("pk"):
            # rule 5: a first session the no-show's session made unneeded is the sale's again
            if package.activated_at is not None and self.expected_used[package.pk] < package.sessions_total:
                self.expected_used[package.pk] += 1
        assert Appointment.objects.get(pk=visit).status == AppointmentStatus.BOOKED

    @rule(visit=appointments, undo=st.booleans())
    def cancel_appointment(self, visit: int, undo: bool) -> None:
        """Cancelling keeps the appointment and uses nothing (rule 8); its undo books it again."""
        appointment = Appointment.all_objects.get(pk=visit)
        entries = last_id(PackageLedgerEntry.objects)
        action = visits.do_undo_cancel if undo else visits.do_cancel_appointment
        _, error = attempt(action, acting_user=self.catalog.desk, appointment=appointment)
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
        elif appointment.status != (AppointmentStatus.CANCELLED if undo else AppointmentStatus.BOOKED):
            assert isinstance(error, Conflict), error
        else:
            assert error is None, error
        assert last_id(PackageLedgerEntry.objects) == entries

    @rule(visit=appointments)
    def delete_appointment(self, visit: int) -> None:
        appointment = Appointment.all_objects.get(pk=visit)
        had_covered_charge = live_uses_of(visit).exists()
        _, error = attempt(visits.do_delete_appointment, acting_user=self.catalog.owner, appointment=appointment,
                           reason="booked in error")
        if appointment.deleted_at is not None:
            assert isinstance(error, NotFound), error
        elif had_covered_charge:
            assert isinstance(error, Conflict), error
        else:
            assert error is None, error

    # rules: invoices

    @rule(who=PATIENT, services=st.lists(SERVICE, min_size=1, max_size=2), for_a_visit=st.booleans(),
          hours=CLOCK_STEP, data=st.data())
    def manual_invoice(self, who: int, services: list[int], for_a_visit: bool, hours: int,
                       data: st.DataObject) -> None:
        patient = self.patients[who]
        visit = self.pick(data, Appointment.objects.filter(patient=patient), "visit") if for_a_visit else None
        lines = [(self.catalog.services[s], visit if i == 0 else None) for i, s in enumerate(services)]
        snap, since = snapshot(), last_id(InvoiceLine.objects)
        released = self.releases_for([visit.pk] if visit else [])
        underflow = reversals_underflow([p for ps in released.values() for p in ps])
        issued_at = self.tick(hours)
        second_session = visit is not None and would_count_a_counted_visit(
            visit.pk, patient.pk, lines[0][0].pk, local_day(issued_at), snap, released)
        _, error = attempt(billing.do_create_invoice, acting_user=self.catalog.desk, patient=patient,
                           lines=lines, issued_at=issued_at)
        if underflow:
            assert isinstance(error, Invalid), error
            return
        if second_session:
            # One visit, one session: its charge or its no-show (the policy) counted it already.
            assert isinstance(error, Conflict) and "one visit uses one session" in error.message, error
            assert last_id(InvoiceLine.objects) == since
            return
        assert error is None, error
        assert len(self.check_charges(since, snap, released)) == len(lines)

    @rule(service=SERVICE, for_a_visit=st.booleans(), data=st.data())
    def add_line(self, service: int, for_a_visit: bool, data: st.DataObject) -> None:
        invoice = self.pick(data, Invoice.objects.all(), "invoice")
        if invoice is None:
            return
        visit = None
        if for_a_visit:
            visit = self.pick(data, Appointment.objects.filter(patient_id=invoice.patient_id), "visit")
        snap, since = snapshot(), last_id(InvoiceLine.objects)
        released = self.releases_for([visit.pk] if visit else [])
        underflow = reversals_underflow([p for ps in released.values() for p in ps])
        second_session = visit is not None and would_count_a_counted_visit(
            visit.pk, invoice.patient_id, self.catalog.services[service].pk, local_day(invoice.issued_at), snap,
            released)
        _, error = attempt(billing.do_add_line, acting_user=self.catalog.desk, invoice=invoice,
                           service=self.catalog.services[service], appointment=visit)
        if invoice.voided_at is not None:
            assert isinstance(error, Conflict), error
            return
        if underflow:
            assert isinstance(error, Invalid), error
            return
        if second_session:
            # One visit, one session: its charge or its no-show (the policy) counted it already.
            assert isinstance(error, Conflict) and "one visit uses one session" in error.message, error
            assert last_id(InvoiceLine.objects) == since
            return
        if unpays_a_live_sale(invoice, self.catalog.services[service], visit.pk if visit else None, snap, released):
            # Rule 1 after activation: the charge goes on a new invoice; nothing is written.
            assert isinstance(error, Conflict) and "Charge it on a new invoice" in error.message, error
            assert last_id(InvoiceLine.objects) == since
            return
        assert error is None, error
        assert len(self.check_charges(since, snap, released)) == 1

    @rule(sale_lines_too=st.sampled_from([False, False, False, True]), data=st.data())
    def remove_line(self, sale_lines_too: bool, data: st.DataObject) -> None:
        lines = InvoiceLine.objects.filter(removed_at__isnull=True).select_related("invoice")
        if not sale_lines_too:
            lines = lines.filter(kind__in=[LineKind.SERVICE, LineKind.FIRST_SESSION])
        line = self.pick(data, lines, "line")
        if line is None:
            return
        use = live_use_for_line(line)
        underflow = use is not None and reversals_underflow([use.patient_package_id])
        pending = pending_sales()
        _, error = attempt(billing.do_remove_line, acting_user=self.catalog.desk, invoice=line.invoice,
                           line_id=line.pk, reason="charged in error")
        if line.invoice.voided_at is not None or line.kind in (LineKind.PACKAGE_SALE, LineKind.PACKAGE_REFUND):
            assert isinstance(error, Conflict), error
            return
        if underflow:
            assert isinstance(error, Invalid), error
            return
        assert error is None, error
        if use is not None:
            self.expected_used[use.patient_package_id] -= 1
        self.settle_paid_off(pending)

    @rule(data=st.data())
    def void_invoice(self, data: st.DataObject) -> None:
        invoice = self.pick(data, Invoice.objects.all(), "invoice")
        if invoice is None:
            return
        current = billing.load_invoice(invoice.pk)
        sold = list(PatientPackage.objects.filter(sale_invoice=invoice))
        uses = [use for line in current.live_lines() if (use := live_use_for_line(line))]
        underflow = reversals_underflow([use.patient_package_id for use in uses])
        _, error = attempt(billing.do_void_invoice, acting_user=self.catalog.desk, invoice=invoice,
                           reason="issued in error")
        if current.voided_at is not None or current.paid != ZERO or any(p.sessions_used for p in sold):
            assert isinstance(error, Conflict), error
            return
        if underflow:
            assert isinstance(error, Invalid), error
            return
        assert error is None, error
        for use in uses:
            self.expected_used[use.patient_package_id] -= 1
        for package in sold:
            package.refresh_from_db()
            assert package.cancelled_at is not None
            self.seq_at_cancel.setdefault(package.pk, package.ledger_seq)

    # rules: the package itself

    @rule(package=packages, refund=st.sampled_from(["none", "half", "all"]))
    def cancel_package(self, package: int, refund: str) -> None:
        sold = PatientPackage.objects.get(pk=package)
        current = billing.load_invoice(sold.sale_invoice_id)
        amount = None
        if refund != "none":
            amount = -(current.paid / 2).quantize(CENT) if refund == "half" else -current.paid
            amount = amount or Decimal("-1.00")
        _, error = attempt(sales.do_cancel_package, acting_user=self.catalog.desk, patient_package=sold,
                           reason="moving away", refund=(amount, "card") if amount is not None else None)
        refusable = amount is not None and (-amount > current.paid or current.voided_at is not None)
        if sold.cancelled_at is not None or refusable:
            assert error is not None
            return
        assert error is None, error
        sold.refresh_from_db()
        assert sold.cancelled_at is not None
        assert billing.load_invoice(sold.sale_invoice_id).balance == current.balance  # rule 11: balanced
        self.seq_at_cancel[sold.pk] = sold.ledger_seq

    @rule(package=packages, change=st.sampled_from([-3, -2, -1, 1, 2, 3]))
    def adjust(self, package: int, change: int) -> None:
        sold = PatientPackage.objects.get(pk=package)
        held = PackageLedgerEntry.objects.filter(patient_package=sold, kind="use", reversed_by__isnull=True).count()
        # Rule 9's bounds, and sessions that charged visits hold come back only by undoing them.
        in_bounds = 0 <= sold.sessions_used - change <= sold.sessions_total and change <= sold.sessions_used - held
        _, error = attempt(sales.do_adjust, acting_user=self.catalog.owner, patient_package=sold, change=change,
                           reason="count corrected")
        if in_bounds:
            assert error is None, error
            self.expected_used[sold.pk] -= change
        else:
            assert isinstance(error, Invalid), error

    @rule(package=packages, days=st.integers(-3, 10))
    def set_expiry(self, package: int, days: int) -> None:
        sold = PatientPackage.objects.get(pk=package)
        if sold.activated_at is None:
            _, error = attempt(sales.do_set_expiry, acting_user=self.catalog.owner, patient_package=sold,
                               expires_at=WINDOW_START)
            assert isinstance(error, Conflict), error
            return
        expires_at = (sold.expires_at or sold.activated_at) + dt.timedelta(days=days)
        _, error = attempt(sales.do_set_expiry, acting_user=self.catalog.owner, patient_package=sold,
                           expires_at=expires_at)
        end_of_that_day = rules.end_of_day(local_day(expires_at), NY)  # expiry is day-granular
        if end_of_that_day <= sold.activated_at:
            assert isinstance(error, Invalid), error
        else:
            assert error is None, error
            sold.refresh_from_db()
            assert sold.expires_at == end_of_that_day

    # rules: the investigator's fixes

    @staticmethod
    def visits_counted_twice() -> set[int]:
        """Visits with more than one live use (by their line's visit or the entry's own)."""
        uses: dict[int, int] = defaultdict(int)
        for entry in PackageLedgerEntry.objects.filter(kind=EntryKind.USE, reversed_by__isnull=True).select_related(
                "invoice_line"):
            visit = entry.appointment_id or (entry.invoice_line.appointment_id if entry.invoice_line else None)
            if visit:
                uses[visit] += 1
        return {visit for visit, n in uses.items() if n > 1}

    @rule(who=PATIENT, data=st.data())
    def apply_a_fix(self, who: int, data: st.DataObject) -> None:
        """A fix the investigator offers is one click that works (or a 409 naming the payment
        to refund first), and a second click changes nothing."""
        patient = self.patients[who]
        investigations, orphans = explain(load_history(patient.pk), timeline=False)
        offered = [(f, pid) for pid, inv in investigations.items() for f in inv.findings if f.fix] + [
            (f, None) for f in orphans if f.fix]
        if not offered:
            return
        finding, package_id = data.draw(st.sampled_from(offered), label="finding")
        context = PatientPackage.objects.get(pk=package_id) if package_id else None
        kwargs = dict(acting_user=self.catalog.desk, action=finding.fix["action"], params=finding.fix["params"],
                      context=context, patient_id=patient.pk)
        used_before = dict(PatientPackage.objects.values_list("pk", "sessions_used"))
        pending = pending_sales()
        doubled_before = self.visits_counted_twice()
        result, error = attempt(lambda: apply_fix(**kwargs))
        if error is not None:
            assert isinstance(error, Conflict) and "refund that payment first" in error.message, (
                finding.code, finding.fix, error)
            return
        assert result.applied, (finding.code, finding.fix, result.message)
        assert self.visits_counted_twice() <= doubled_before, (finding.code, "the fix counted a visit twice")
        for pk, used in PatientPackage.objects.values_list("pk", "sessions_used"):
            self.expected_used[pk] += used - used_before[pk]
        done = paid_off(pending)
        assert set(PatientPackage.objects.filter(pk__in=pending, activated_at__isnull=False)
                   .values_list("pk", flat=True)) == done, (finding.code, "a sale paid off by the fix")
        entries = last_id(PackageLedgerEntry.objects)
        lines = list(InvoiceLine.objects.order_by("pk").values_list("pk", "covered_by_id", "amount", "removed_at"))
        again, error = attempt(lambda: apply_fix(**kwargs))
        assert error is not None or not again.applied, (finding.code, finding.fix, again.message)
        assert last_id(PackageLedgerEntry.objects) == entries, (finding.code, "the repeat moved a count")
        assert list(InvoiceLine.objects.order_by("pk").values_list(
            "pk", "covered_by_id", "amount", "removed_at")) == lines, (finding.code, "the repeat changed a line")

    @rule(data=st.data())
    def owner_override(self, data: st.DataObject) -> None:
        """An owner applies a package of their choice to a charged line ("apply_to_line" with
        override), moving it from another package or past a rule working as designed (before
        purchase, expired). Never onto a package that is unpaid, closed, used up or does not
        cover the service, never on a paid invoice; a repeat changes nothing."""
        line = self.pick(data, InvoiceLine.objects.filter(
            kind=LineKind.SERVICE, removed_at__isnull=True, invoice__voided_at__isnull=True), "line")
        if line is None:
            return
        target = self.pick(data, PatientPackage.objects.filter(patient_id=line.invoice.patient_id), "package")
        if target is None:
            return
        kwargs = dict(acting_user=self.catalog.owner, action="apply_to_line", context=target,
                      params={"line_id": line.pk, "override": True, "reason": "the owner's call"})
        used_before = dict(PatientPackage.objects.values_list("pk", "sessions_used"))
        pending = pending_sales()
        result, error = attempt(lambda: apply_fix(**kwargs))
        if error is not None:
            assert isinstance(error, Conflict), error
            assert dict(PatientPackage.objects.values_list("pk", "sessions_used")) == used_before
            return
        line.refresh_from_db()
        assert line.covered_by_id == target.pk and line.amount == ZERO
        self.settle_paid_off(pending)  # the line may have paid off a sale: its ticked first session is used
        first_sessions = {pk for pk, ticked in pending.items()
                          if ticked and PatientPackage.objects.get(pk=pk).activated_at is not None}
        moved = {pk: change for pk, used in PatientPackage.objects.values_list("pk", "sessions_used")
                 if (change := used - used_before[pk] - (pk in first_sessions))}
        if result.applied:
            # one session moves: the target uses one, the package that covered the line gives one back
            assert moved.pop(target.pk) == 1 and list(moved.values()) in ([], [-1]), moved
        else:
            assert moved == {}, moved
        for pk, change in moved.items():
            self.expected_used[pk] += change
        if result.applied:
            self.expected_used[target.pk] += 1
        entries = last_id(PackageLedgerEntry.objects)
        again, error = attempt(lambda: apply_fix(**kwargs))
        assert error is None and not again.applied, (error, again)
        assert last_id(PackageLedgerEntry.objects) == entries

    # the invariants, after every step

    @invariant()
    def a_usable_package_is_paid_for(self) -> None:
        """Rule 1, kept by rule 11: a package activated and not cancelled has its sale fully paid
        (a plain refund cannot take that money back; cancelling the package can), and its sale
        invoice has no balance (a charge that would leave one goes on a new invoice)."""
        live = PatientPackage.objects.filter(activated_at__isnull=False, cancelled_at__isnull=True)
        unpaid = live.annotate(
            paid=Coalesce(Sum("sale_invoice__payments__amount"), Decimal("0.00"))).filter(paid__lt=F("price"))
        assert not unpaid.exists(), list(unpaid.values("pk", "price", "paid"))
        sales_of = dict(live.values_list("pk", "sale_invoice_id"))
        balance = balances(set(sales_of.values()))
        for package_id, invoice_id in sales_of.items():
            assert balance[invoice_id] <= ZERO, f"active package {package_id}'s sale has a balance of {balance[invoice_id]}"

    @invariant()
    def a_paid_sale_is_not_left_pending(self) -> None:
        """Rule 1 the other way: a package not cancelled whose sale has nothing left to pay is
        active (or was), whether a payment or a lower total settled it; never stuck pending."""
        assert not paid_off(pending_sales()), "a pending package whose sale is paid in full"

    @invariant()
    def one_visit_uses_one_session(self) -> None:
        """A visit is counted by at most one of its charges or its no-show (rules 2 and 13), unless
        an owner's override put a second on it (the investigator then says POSSIBLE_DOUBLE_USE).
        A sale's first session is rule 5's: it moves onto the visit's charge, or stays on a
        cancelled package's sale for a service that package does not cover."""
        uses: dict[int, list[Any]] = defaultdict(list)
        for visit, line_kind, decision in PackageLedgerEntry.objects.filter(
                kind=EntryKind.USE, reversed_by__isnull=True, appointment_id__isnull=False).values_list(
                "appointment_id", "invoice_line__kind", "invoice_line__coverage_decision"):
            if line_kind in (None, LineKind.SERVICE):
                uses[visit].append(decision)
        for visit, decisions in uses.items():
            assert len(decisions) == 1 or any((d or {}).get("override") for d in decisions), (
                f"visit {visit} is counted {len(decisions)} times: {decisions}")

    @invariant()
    def every_count_adds_up(self) -> None:
        assert verify() == []
        packages = {p.pk: p for p in self.reads.packages.rows()}
        entries = self.reads.entries.rows()
        reversed_ids = {e.reverses_id for e in entries if e.reverses_id}
        by_seq = {(e.patient_package_id, e.seq): e for e in entries}
        change_sum: dict[int, int] = defaultdict(int)
        for entry in entries:
            change_sum[entry.patient_package_id] += entry.change
            package = packages[entry.patient_package_id]
            if entry.kind == EntryKind.USE:
                assert package.activated_at is not None, f"pending package {package.pk} used a session"
                if entry.seq > self.seq_at_cancel.get(package.pk, entry.seq):
                    # After the cancel only a move: a sale's first session and its visit's line
                    # trading the one session the visit used (a reversal for that visit just before).
                    before = by_seq.get((package.pk, entry.seq - 1))
                    assert (
                        before is not None and before.kind == EntryKind.REVERSAL
                        and entry.appointment_id is not None and before.appointment_id == entry.appointment_id
                    ), f"cancelled package {package.pk} used a session after it was closed"
        for package in packages.values():
            remaining = package.sessions_total - package.sessions_used
            assert 0 <= package.sessions_used <= package.sessions_total
            assert package.sessions_total + change_sum[package.pk] == remaining
            assert package.sessions_used == self.expected_used[package.pk], (
                f"package {package.pk}: {package.sessions_used} used, expected {self.expected_used[package.pk]}"
            )

        live_uses: dict[int, list[Any]] = defaultdict(list)
        for entry in entries:
            if entry.kind != EntryKind.USE or entry.pk in reversed_ids:
                continue
            # Rule 8: a deleted visit holds no covered charge (a sale's first session may name it).
            assert entry.appointment_deleted_at is None or entry.invoice_line_kind == LineKind.FIRST_SESSION, (
                f"use {entry.pk} covers a charge of a deleted visit")
            if entry.invoice_line_id is not None:
                live_uses[entry.invoice_line_id].append(entry)
            else:  # only the no-show policy uses a session without a line
                assert entry.appointment_status == AppointmentStatus.NO_SHOW and "no-show" in entry.reason

        shown: dict[int, list[int]] = defaultdict(list)
        for line in self.reads.lines.rows():
            live = line.removed_at is None and line.invoice_voided_at is None
            uses = live_uses.pop(line.pk, [])
            if line.covered_by_id is not None:
                assert line.covered_by_patient_id == line.invoice_patient_id, (
                    f"line {line.pk} is covered by another patient's package"
                )
            if live and line.covered_by_id is not None:
                assert [u.patient_package_id for u in uses] == [line.covered_by_id], (
                    f"live covered line {line.pk} has uses {uses}"
                )
                # "Session 3 of 10 · 7 left": what the ledger left after the use, and a session
                # no other live line of the package shows (one a removed line gave back, or the count)
                assert line.sessions_left == line.covered_by_sessions_total - uses[0].used_after
                assert 1 <= line.session_number <= uses[0].used_after
                shown[line.covered_by_id].append(line.session_number)
            else:
                assert uses == [], f"line {line.pk} (live={live}, covered={line.covered_by_id}) has uses {uses}"
            if line.kind == LineKind.FIRST_SESSION and live:
                package = packages[line.patient_package_id]
                assert (line.covered_by_id is not None) == (package.activated_at is not None), (
                    f"first-session line {line.pk}: covered={line.covered_by_id}, "
                    f"package activated={package.activated_at}"
                )
            if line.kind in (LineKind.PACKAGE_SALE, LineKind.PACKAGE_REFUND):
                assert line.covered_by_id is None
            if line.kind != LineKind.SERVICE:
                continue
            assert line.not_covered_reason in (*rules.REASON_CODES, None)
            decision = line.coverage_decision
            assert decision is not None, f"service line {line.pk} has no coverage decision"
            assert decision["covered_by"] == line.covered_by_id
            considered = {c["patient_package_id"]: c["reason"] for c in decision["considered"]}
            assert all(packages[pid].patient_id == line.invoice_patient_id for pid in considered)
            if line.covered_by_id is not None:
                assert considered[line.covered_by_id] is None
                assert line.amount == ZERO and line.not_covered_reason is None
                assert line.session_number is not None
            else:
                assert all(reason is not None for reason in considered.values())
                assert line.not_covered_reason == decision["reason"]
                assert line.amount == line.list_price
        assert not live_uses, f"live uses of unknown lines: {live_uses}"
        for package_id, numbers in shown.items():
            assert len(numbers) == len(set(numbers)), f"package {package_id}'s live lines show sessions {numbers}"


@pytest.mark.slow
def test_random_front_desk_days_keep_every_count_right(owner, desk, clinic, acu60, acu90):
    massage = catalog.do_create_service(acting_user=owner, name="Massage 60 min", duration_minutes=60,
                                        price=Decimal("80.00"))
    any_acupuncture = catalog.do_create_package(
        acting_user=owner, name="3 x Acupuncture", price=Decimal("270.00"), sessions=3,
        service_ids=[acu60.pk, acu90.pk],
    )
    five_day_pass = catalog.do_create_package(
        acting_user=owner, name="2 x Acupuncture 60, 5 days", price=Decimal("150.00"), sessions=2,
        service_ids=[acu60.pk], valid_days=5,
    )
    PackageTrackingMachine.catalog = Catalog(
        owner=owner, desk=desk, services=[acu60, acu90, massage], templates=[any_acupuncture, five_day_pass]
    )
    run_state_machine_as_test(
        PackageTrackingMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        ),
    )
