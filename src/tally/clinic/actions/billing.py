"""Invoices, lines, payments and voids (SPEC.md rules 1, 2, 7, 11)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from django.db.models import Prefetch, QuerySet

from ..audit import record, snapshot
from ..consistency import pending_on_paid_off_sales
from ..errors import Conflict, Invalid, NotFound
from ..ledger import live_uses_for_visit
from ..locking import lock_appointment, lock_invoice, lock_patient_packages
from ..models import (
    Appointment,
    Invoice,
    InvoiceLine,
    Patient,
    PatientPackage,
    Payment,
    Service,
    Staff,
)
from ..models.billing import ZERO, LineKind
from ..models.scheduling import Tombstone, TombstoneKind
from ..rules import end_of_day, last_valid_day
from .common import (
    DESK,
    clinic_action,
    clinic_tz,
    local_date,
    max_length_of,
    money,
    now,
    optional_text,
    require_role,
    require_text,
)
from .coverage import (
    COVER_FIELDS,
    NOT_NEEDED,
    USED_ON_VISIT_CHARGE,
    charge_service,
    cover_line,
    uncover_line,
)

# The column holds 40 characters; the API accepts more text, and PostgreSQL refuses a longer value.
METHOD_MAX_LENGTH = max_length_of(Payment, "method")


def live_charges(appointment: Appointment) -> QuerySet[InvoiceLine]:
    """The visit's service lines still charged: not removed, on an invoice not voided."""
    return InvoiceLine.objects.filter(appointment=appointment, kind=LineKind.SERVICE, removed_at__isnull=True,
                                      invoice__voided_at__isnull=True)


def invoices_with_lines() -> QuerySet[Invoice]:
    """Invoices with their lines (in order) and payments, for totals and rendering."""
    return (
        Invoice.objects.select_related("patient")
        .prefetch_related(Prefetch("lines", queryset=InvoiceLine.objects.order_by("id")), "payments")
    )


def load_invoice(invoice_id: int) -> Invoice:
    """An invoice with its lines and payments, for totals and rendering."""
    return invoices_with_lines().get(pk=invoice_id)


def invoice_as_created(invoice: Invoice, lines: list[InvoiceLine]) -> Invoice:
    """An invoice this transaction has just created, with these lines and no payment: what
    `load_invoice` would read back, without reading it (its lines and payments in the
    related managers' cache, as `prefetch_related` leaves them)."""
    invoice._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "lines": sorted(lines, key=lambda line: line.pk),
        "payments": [],
    }
    return invoice


def lock_visits(appointments: Iterable[Appointment | None]) -> None:
    """The visits lines will charge, locked first (locking.py's order: appointment, invoice,
    packages) and still on the schedule: a deletion that landed after the caller read a visit
    is a 404 here, never a covered charge on a deleted visit (rule 8)."""
    for pk in sorted({a.pk for a in appointments if a is not None}):
        lock_appointment(pk)


def check_line_target(patient: Patient, service: Service, appointment: Appointment | None) -> None:
    """An archived service is no longer offered: charged anew on nothing but the visits booked
    for it while it was, which are charged it as booked (their check-in, and the fixes that
    restore or record one: SPEC "Fixes", "its booked service charged")."""
    booked = appointment is not None and appointment.service_id == service.pk
    if not service.active and not booked:
        raise Invalid(f"{service.name} is no longer offered.", fields={"service_id": "inactive service"})
    if appointment is not None and appointment.patient_id != patient.pk:
        raise Invalid("That appointment belongs to another patient.", fields={"appointment_id": "another patient's"})


@clinic_action
def do_create_invoice(
    *,
    acting_user: Staff,
    patient: Patient,
    lines: list[tuple[Service, Appointment | None]],
    issued_at: dt.datetime | None = None,
) -> Invoice:
    """A manual invoice; each service line runs rules 1-6 (rule 2: charging a visit uses a session)."""
    require_role(acting_user, *DESK, doing="create invoices")
    if not lines:  # an invoice with no line is what `tally verify` reports as half-written
        raise Invalid("An invoice needs at least one line.", fields={"lines": "at least one line"})
    for service, appointment in lines:
        check_line_target(patient, service, appointment)
    lock_visits(appointment for _, appointment in lines)
    lock_patient_packages(patient.pk)
    invoice = Invoice.objects.create(patient=patient, issued_at=issued_at or now(), created_by=acting_user)
    for service, appointment in lines:
        charge_service(invoice, service, by=acting_user, appointment=appointment)
    invoice = load_invoice(invoice.pk)
    record("invoice.create", actor=acting_user, obj=invoice, patient_id=patient.pk,
           after={"number": invoice.number, "lines": [ln.pk for ln in invoice.lines.all()]})
    return invoice


@clinic_action
def do_add_line(
    *, acting_user: Staff, invoice: Invoice, service: Service, appointment: Appointment | None = None
) -> InvoiceLine:
    """Charge a service on an invoice; rules 1-6 decide whether a package covers it."""
    require_role(acting_user, *DESK, doing="edit invoices")
    lock_visits([appointment])
    invoice = lock_invoice(invoice.pk)
    if invoice.voided_at is not None:
        raise Conflict(f"Invoice {invoice.number} is void; lines cannot be added.")
    check_line_target(invoice.patient, service, appointment)
    lock_patient_packages(invoice.patient_id)
    line = charge_service(invoice, service, by=acting_user, appointment=appointment)
    check_charge_keeps_sale_paid(invoice, line, field="service_id")
    record("invoice.add_line", actor=acting_user, obj=line, patient_id=invoice.patient_id, after=snapshot(line))
    return line


def remove_line(line: InvoiceLine, *, by: Staff | None, reason: str) -> Tombstone:
    """Rule 7: a covered line gives its session back; the line leaves a tombstone."""
    uncover_line(line, by=by, reason=reason or "line removed")
    line.removed_at = now()
    line.removal_reason = reason
    line.save(update_fields=["removed_at", "removal_reason"])
    return Tombstone.objects.create(
        kind=TombstoneKind.INVOICE_LINE,
        patient_id=line.invoice.patient_id,
        invoice_line=line,
        content=snapshot(line) | {"invoice_number": line.invoice.number},
        removed_at=line.removed_at,
        removed_by=by,
        reason=reason,
    )


@clinic_action
def do_remove_line(*, acting_user: Staff, invoice: Invoice, line_id: int, reason: str = "") -> None:
    require_role(acting_user, *DESK, doing="edit invoices")
    invoice = lock_invoice(invoice.pk)
    line = InvoiceLine.objects.filter(pk=line_id, invoice=invoice, removed_at__isnull=True).first()
    if line is None:
        raise NotFound("No such line on this invoice.")
    if invoice.voided_at is not None:
        raise Conflict(f"Invoice {invoice.number} is void; its lines cannot change.")
    if line.kind in (LineKind.PACKAGE_SALE, LineKind.PACKAGE_REFUND):
        raise Conflict("A package sale cannot be removed line by line: void the invoice or cancel the package.")
    lock_patient_packages(invoice.patient_id)
    before = snapshot(line)
    line.invoice = invoice
    tombstone = remove_line(line, by=acting_user, reason=optional_text(reason, "reason"))
    activated = activate_paid_off_sales([invoice.pk], at=tombstone.removed_at, by=acting_user)
    record("invoice.remove_line", actor=acting_user, obj=line, patient_id=invoice.patient_id, before=before,
           after=snapshot(line) | activated_note(activated))


def activate_paid_packages(invoice: Invoice, *, paid_at: dt.datetime, by: Staff | None) -> list[PatientPackage]:
    """Rule 1: the payment that completes a sale activates its package; rule 5: a ticked
    first session is used by that payment."""
    invoice = load_invoice(invoice.pk)
    if invoice.balance > ZERO:
        return []
    tz = clinic_tz()
    activated = []
    pending = PatientPackage.objects.filter(
        sale_invoice=invoice, activated_at__isnull=True, cancelled_at__isnull=True
    )
    for package in pending:
        package.activated_at = paid_at
        day = last_valid_day(local_date(paid_at, tz), package.valid_days)
        package.expires_at = end_of_day(day, tz) if day else None
        package.save(update_fields=["activated_at", "expires_at"])
        if package.use_first_session:
            line = InvoiceLine.objects.filter(
                patient_package=package, kind=LineKind.FIRST_SESSION, removed_at__isnull=True, covered_by__isnull=True
            ).first()
            if line is not None:
                use_first_session(package, line, by=by)
        activated.append(package)
    return activated


def activate_paid_off_sales(invoice_ids: Iterable[int], *, at: dt.datetime,
                            by: Staff | None) -> list[PatientPackage]:
    """Rule 1 when a sale invoice's total goes down (a charge removed, or paid via a package)
    rather than a payment coming in: a sale now fully paid activates its package `at` that
    moment, as the payment completing it would have. Without this the package stayed pending
    with nothing left to pay, and no payment could finish it. Call with the patient's packages
    locked (the order of locking.py), after the change; `activated_note` says in its audit
    event which packages it activated."""
    paid_off = PatientPackage.objects.filter(
        sale_invoice_id__in=list(invoice_ids), activated_at__isnull=True, cancelled_at__isnull=True,
    ).values_list("sale_invoice_id", flat=True)
    return [package for invoice_id in sorted(set(paid_off))
            for package in activate_paid_packages(Invoice(pk=invoice_id), paid_at=at, by=by)]


@clinic_action
def do_activate_paid_off_packages(*, acting_user: Staff | None) -> list[PatientPackage]:
    """`tally activatepaid`: activate, now, every package an older release left pending on a
    sale with nothing left to pay (a charge removed, a check-in undone or a line covered after
    the payment; `tally verify` names them). As `activate_paid_off_sales` does today: a ticked
    first session is used. One `package.activate` event for each."""
    activated: list[PatientPackage] = []
    for sale in pending_on_paid_off_sales():
        invoice = lock_invoice(sale.sale_invoice_id)
        lock_patient_packages(invoice.patient_id)
        for package in activate_paid_off_sales([invoice.pk], at=now(), by=acting_user):
            record("package.activate", actor=acting_user, obj=package, patient_id=package.patient_id,
                   before={"activated_at": None},
                   after={"activated_at": package.activated_at.isoformat() if package.activated_at else None,
                          "sale_invoice": invoice.number, "cause": "sale paid off without a payment"})
            activated.append(package)
    return activated


def activated_note(activated: list[PatientPackage]) -> dict[str, list[int]]:
    return {"activated_packages": [p.pk for p in activated]} if activated else {}


def use_first_session(package: PatientPackage, first_line: InvoiceLine, *, by: Staff | None) -> None:
    """Rule 5. When the sale names a visit that is already charged and that charge can still
    be paid via the package (its invoice would not be left overpaid), the first session
    covers that charge, so the patient is not billed for a session they already bought;
    otherwise the sale's own first-session line uses it."""
    visit_line = None
    if package.first_session_appointment_id is not None:
        if live_uses_for_visit(package.first_session_appointment_id).exists():
            # The visit is counted already (another package covered its charge): using the first
            # session too would count it twice. Dropped as when that charge comes after the sale.
            first_line.removed_at = now()
            first_line.removal_reason = NOT_NEEDED
            first_line.save(update_fields=["removed_at", "removal_reason"])
            return
        candidates = InvoiceLine.objects.filter(
            appointment_id=package.first_session_appointment_id, kind=LineKind.SERVICE, removed_at__isnull=True,
            covered_by__isnull=True, invoice__voided_at__isnull=True,
            appointment__deleted_at__isnull=True,  # rule 8: a deleted visit holds no covered charge
            service__in=package.eligible_services.all(),
        ).order_by("pk")
        for candidate in candidates:
            # After the package locks, against the lock order: never wait here (deadlock).
            lock_invoice(candidate.invoice_id, nowait=True)
            invoice = load_invoice(candidate.invoice_id)
            if invoice.paid <= invoice.total - candidate.amount:
                visit_line = candidate
                break
    if visit_line is None:
        cover_line(first_line, package, by=by, reason="first session, used at the sale")
        first_line.save(update_fields=COVER_FIELDS)
        return
    cover_line(visit_line, package, by=by, reason="first session of the sale, used on this visit's charge")
    visit_line.coverage_decision = {
        "covered_by": package.pk, "reason": None, "first_session": True, "at": now().isoformat(),
        "considered": [{"patient_package_id": package.pk, "reason": None}],
        "before": visit_line.coverage_decision,
    }
    visit_line.save(update_fields=[*COVER_FIELDS, "coverage_decision"])
    first_line.removed_at = now()
    first_line.removal_reason = USED_ON_VISIT_CHARGE
    first_line.save(update_fields=["removed_at", "removal_reason"])


def live_package_sold_on(invoice: Invoice) -> PatientPackage | None:
    """The package this invoice sold, if it was activated and is not cancelled (active,
    exhausted or expired): its money comes back only by cancelling it (rule 11)."""
    return PatientPackage.objects.filter(sale_invoice=invoice, activated_at__isnull=False,
                                         cancelled_at__isnull=True).first()


def check_refund_keeps_sales_paid(invoice: Invoice, amount: Decimal) -> None:
    """Rules 1 and 11: a package is usable only while its sale is fully paid (the invoice's
    balance, as for its activation), and a package's money comes back by cancelling it with a
    refund (a credit line and a negative payment, so the invoice stays balanced). A plain
    refund that would leave a balance on the sale of a package that was activated and is not
    cancelled (active, exhausted or expired) would leave it active and unpaid: refused. Before
    activation (a partial payment returned) or after cancellation, a plain refund is fine, as
    is one of an overpayment (a line removed from the sale invoice after it was paid)."""
    if invoice.balance - amount <= ZERO:
        return
    live = live_package_sold_on(invoice)
    if live is not None:
        raise Conflict(
            f"{invoice.number} is the sale of {live.name}, which is {live.status.replace('_', ' ')}: this refund "
            "would leave the sale not fully paid. To refund the package, cancel it with a refund; to refund "
            "another line of this invoice, remove that line first.",
            fields={"amount": "cancel the package with a refund"},
        )


def check_charge_keeps_sale_paid(invoice: Invoice, line: InvoiceLine, *, field: str) -> None:
    """Rule 1 after activation, as `check_refund_keeps_sales_paid` keeps it for refunds: a
    charge just added to the sale invoice of a package that was activated and is not cancelled
    (active, exhausted or expired) may not leave that invoice with a balance, or the package
    would stay usable while its sale is no longer paid for. Refused (the caller's transaction
    rolls the charge back): it goes on a new invoice. A charge the package covers costs
    nothing and is fine, as is one the invoice's overpayment pays (a line removed after it was
    paid); before activation the payment that completes the invoice activates the package."""
    if line.amount <= ZERO:
        return
    current = load_invoice(invoice.pk)
    if current.balance <= ZERO:
        return
    live = live_package_sold_on(invoice)
    if live is not None:
        raise Conflict(
            f"{current.number} is the sale of {live.name}, which is {live.status.replace('_', ' ')}: charging "
            f"{line.description} ({line.amount}) on it would leave the sale not fully paid. Charge it on a new "
            "invoice.",
            fields={field: "charge it on a new invoice"},
        )


@clinic_action
def do_record_payment(
    *,
    acting_user: Staff,
    invoice: Invoice,
    amount: Decimal | str,
    method: str,
    received_at: dt.datetime | None = None,
    reason: str = "",
) -> Payment:
    """A payment, or a refund (negative, with a reason). Paying more than the balance is refused."""
    require_role(acting_user, *DESK, doing="record payments")
    amount = money(amount)
    method = require_text(method, "method", "payment method", METHOD_MAX_LENGTH)
    invoice = lock_invoice(invoice.pk)
    if invoice.voided_at is not None:
        raise Conflict(f"Invoice {invoice.number} is void; it takes no payments.")
    lock_patient_packages(invoice.patient_id)
    current = load_invoice(invoice.pk)
    if amount == ZERO:
        raise Invalid("A payment needs an amount.", fields={"amount": "must not be 0"})
    if received_at is not None and received_at < invoice.issued_at and any(
            line.kind == LineKind.PACKAGE_SALE for line in current.live_lines()):
        # The payment completing a sale dates its activation (rule 1): a package cannot be
        # active, or start its validity, before it was sold.
        raise Invalid(f"A payment on {current.number} cannot be dated before the package was sold.",
                      fields={"received_at": "before the sale"})
    if amount > ZERO and amount > current.balance:
        raise Invalid(
            f"{amount} is more than the balance of {current.balance} on {current.number}.",
            fields={"amount": f"must be at most the balance, {current.balance}"},
        )
    if amount < ZERO:
        reason = require_text(reason, "reason", "reason for the refund")
        if -amount > current.paid:
            raise Invalid(
                f"A refund of {-amount} is more than the {current.paid} paid on {current.number}.",
                fields={"amount": f"a refund may be at most {current.paid}"},
            )
        check_refund_keeps_sales_paid(current, amount)
    payment = Payment.objects.create(
        invoice=invoice,
        amount=amount,
        method=method,
        received_at=received_at or now(),
        reason=optional_text(reason, "reason"),
        created_by=acting_user,
    )
    if amount > ZERO:
        activate_paid_packages(invoice, paid_at=payment.received_at, by=acting_user)
    record("invoice.payment", actor=acting_user, obj=payment, patient_id=invoice.patient_id, after=snapshot(payment))
    return payment


@clinic_action
def do_void_invoice(*, acting_user: Staff, invoice: Invoice, reason: str) -> Invoice:
    """Voiding gives back every session its lines used (rule 7). A package sale can be voided
    only while nothing is paid and no session is used (rule 11)."""
    require_role(acting_user, *DESK, doing="void invoices")
    reason = require_text(reason, "reason", "reason for voiding")
    invoice = lock_invoice(invoice.pk)
    if invoice.voided_at is not None:
        raise Conflict(f"Invoice {invoice.number} is already void.")
    lock_patient_packages(invoice.patient_id)
    current = load_invoice(invoice.pk)
    sold = list(PatientPackage.objects.filter(sale_invoice=invoice))
    if current.paid != ZERO:
        if sold:
            raise Conflict("This package sale has payments: cancel the package (with a refund) instead of voiding.")
        raise Conflict(f"{current.number} has {current.paid} paid: refund it before voiding.")
    for package in sold:
        if package.sessions_used > 0:
            raise Conflict(f"{package.name} has sessions used: cancel the package instead of voiding its sale.")
    before = {"status": current.status}
    for line in current.lines.all():
        if line.removed_at is None:
            uncover_line(line, by=acting_user, reason=f"invoice {current.number} voided")
    stamp = now()
    for package in sold:
        if package.cancelled_at is None:
            package.cancelled_at = stamp
            package.cancel_reason = f"sale invoice {current.number} voided: {reason}"
            package.save(update_fields=["cancelled_at", "cancel_reason"])
    invoice.voided_at = stamp
    invoice.void_reason = reason
    invoice.save(update_fields=["voided_at", "void_reason"])
    record("invoice.void", actor=acting_user, obj=invoice, patient_id=invoice.patient_id, before=before,
           after={"status": "void", "reason": reason})
    return load_invoice(invoice.pk)


__all__ = [
    "activate_paid_off_sales",
    "activated_note",
    "do_activate_paid_off_packages",
    "activate_paid_packages",
    "do_add_line",
    "do_create_invoice",
    "do_record_payment",
    "do_remove_line",
    "do_void_invoice",
    "invoice_as_created",
    "live_package_sold_on",
    "load_invoice",
    "remove_line",
]
