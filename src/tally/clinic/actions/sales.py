"""Selling, cancelling and extending patient packages (SPEC.md rules 1, 5, 11, 12)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db.models import Q

from ..audit import record, snapshot
from ..errors import Conflict, Invalid
from ..ledger import post_entry
from ..locking import lock_invoice, lock_patient_packages
from ..models import (
    Appointment,
    Invoice,
    InvoiceLine,
    Package,
    PackageLedgerEntry,
    Patient,
    PatientPackage,
    Payment,
    Staff,
)
from ..models.billing import ZERO, LineKind
from ..models.ledger import EntryKind
from ..models.scheduling import AppointmentStatus
from ..rules import end_of_day
from .billing import METHOD_MAX_LENGTH, activate_paid_packages, load_invoice, lock_visits
from .common import (
    DESK,
    OWNER,
    clinic_action,
    clinic_tz,
    local_date,
    money,
    now,
    require_role,
    require_text,
)


@clinic_action
def do_sell_package(
    *,
    acting_user: Staff,
    patient: Patient,
    package: Package,
    use_first_session: bool,
    sold_at: dt.datetime | None = None,
    first_session_appointment: Appointment | None = None,
    payment: tuple[Decimal | str, str] | None = None,
) -> tuple[PatientPackage, Invoice]:
    """Sell a package on a new invoice, snapshotting the template.

    Rule 1: it activates only when the sale is fully paid. Rule 5: `use_first_session`
    must be answered; ticked, one session is used at the sale, or by the payment that
    activates it if the sale is not yet paid.
    """
    require_role(acting_user, *DESK, doing="sell packages")
    if not isinstance(use_first_session, bool):
        raise Invalid("Say whether the first session is used today.", fields={"use_first_session": "required"})
    if not package.active:
        raise Invalid(f"{package.name} is no longer sold.", fields={"package_id": "inactive package"})
    if patient.archived_at is not None:
        raise Conflict(f"{patient.full_name} is archived.")
    if first_session_appointment is not None:
        if first_session_appointment.patient_id != patient.pk:
            raise Invalid("That appointment belongs to another patient.",
                          fields={"first_session_appointment_id": "another patient's"})
        if not use_first_session:
            raise Invalid("A first-session visit only makes sense with use_first_session.",
                          fields={"first_session_appointment_id": "needs use_first_session: true"})
    pay_amount = money(payment[0]) if payment else None
    if payment is not None and pay_amount is not None:
        if pay_amount <= ZERO:
            raise Invalid("A payment at the sale must be positive.", fields={"payment.amount": "must be > 0"})
        if pay_amount > package.price:
            raise Invalid(f"{pay_amount} is more than the price, {package.price}.",
                          fields={"payment.amount": f"must be at most {package.price}"})
        pay_method = require_text(payment[1], "payment.method", "payment method", METHOD_MAX_LENGTH)
    service_ids = list(package.services.values_list("pk", flat=True))
    if not service_ids:
        raise Invalid(f"{package.name} covers no service.", fields={"package_id": "covers no service"})
    # The visit the first session is for, locked first as every charge of a visit locks it
    # (locking.py's order): a check-in of it that read its lines before this sale committed
    # would otherwise charge it to another package too, two sessions for one visit (rule 10).
    lock_visits([first_session_appointment])
    lock_patient_packages(patient.pk)
    sold_at = sold_at or now()
    invoice = Invoice.objects.create(patient=patient, issued_at=sold_at, created_by=acting_user)
    sold = PatientPackage.objects.create(
        patient=patient,
        package=package,
        name=package.name,
        price=package.price,
        sessions_total=package.sessions,
        valid_days=package.valid_days,
        sale_invoice=invoice,
        sold_at=sold_at,
        sold_by=acting_user,
        use_first_session=use_first_session,
        first_session_appointment=first_session_appointment,
    )
    sold.eligible_services.set(service_ids)
    InvoiceLine.objects.create(
        invoice=invoice,
        kind=LineKind.PACKAGE_SALE,
        package=package,
        patient_package=sold,
        description=f"{package.name} ({package.sessions} sessions)",
        list_price=package.price,
        amount=package.price,
        created_by=acting_user,
    )
    if use_first_session:
        appointment = first_session_appointment
        InvoiceLine.objects.create(
            invoice=invoice,
            kind=LineKind.FIRST_SESSION,
            patient_package=sold,
            package=package,
            service=appointment.service if appointment else None,
            appointment=appointment,
            description=f"First session of {package.name}",
            list_price=ZERO,
            amount=ZERO,
            created_by=acting_user,
        )
    if pay_amount is not None:
        Payment.objects.create(invoice=invoice, amount=pay_amount, method=pay_method,
                               received_at=sold_at, created_by=acting_user)
    activate_paid_packages(invoice, paid_at=sold_at, by=acting_user)
    sold.refresh_from_db()
    record("package.sell", actor=acting_user, obj=sold, patient_id=patient.pk, after=snapshot(sold))
    return sold, load_invoice(invoice.pk)


@clinic_action
def do_cancel_package(
    *,
    acting_user: Staff,
    patient_package: PatientPackage,
    reason: str,
    refund: tuple[Decimal | str, str] | None = None,
) -> PatientPackage:
    """Rule 11: cancelling closes the package; used sessions stay used. A refund is a credit
    line plus a negative payment of the same amount on the sale invoice."""
    require_role(acting_user, *DESK, doing="cancel packages")
    reason = require_text(reason, "reason", "reason for cancelling")
    invoice = lock_invoice(patient_package.sale_invoice_id)
    packages = {p.pk: p for p in lock_patient_packages(patient_package.patient_id)}
    package = packages[patient_package.pk]
    if package.cancelled_at is not None:
        raise Conflict(f"{package.name} is already cancelled.")
    before = snapshot(package)
    if refund is not None:
        amount = money(refund[0], "refund.amount")
        method = require_text(refund[1], "refund.method", "refund method", METHOD_MAX_LENGTH)
        current = load_invoice(invoice.pk)
        if amount >= ZERO:
            raise Invalid("A refund is a negative amount.", fields={"refund.amount": "must be < 0"})
        if -amount > current.paid:
            raise Invalid(f"A refund of {-amount} is more than the {current.paid} paid.",
                          fields={"refund.amount": f"at most {current.paid}"})
        if invoice.voided_at is not None:
            raise Conflict("The sale invoice is void; nothing can be refunded on it.")
        stamp = now()
        InvoiceLine.objects.create(
            invoice=invoice, kind=LineKind.PACKAGE_REFUND, patient_package=package, package_id=package.package_id,
            description=f"Refund: {package.name} cancelled", list_price=amount, amount=amount,
            created_by=acting_user,
        )
        Payment.objects.create(invoice=invoice, amount=amount, method=method, received_at=stamp,
                               reason=f"package cancelled: {reason}", created_by=acting_user)
    package.cancelled_at = now()
    package.cancel_reason = reason
    package.save(update_fields=["cancelled_at", "cancel_reason"])
    record("package.cancel", actor=acting_user, obj=package, patient_id=package.patient_id, before=before,
           after=snapshot(package))
    return package


@clinic_action
def do_set_expiry(*, acting_user: Staff, patient_package: PatientPackage, expires_at: dt.datetime) -> PatientPackage:
    """Rule 12: an owner may extend (or correct) the expiry; visits already charged keep
    the decision they got, later ones follow the new date."""
    require_role(acting_user, *OWNER, doing="change a package's expiry")
    packages = {p.pk: p for p in lock_patient_packages(patient_package.patient_id)}
    package = packages[patient_package.pk]
    if package.activated_at is None:
        raise Conflict(f"{package.name} is not active yet; its expiry starts when it is paid.")
    # Coverage compares clinic-local dates (rule 12), so an expiry is always the end of a day.
    tz = clinic_tz()
    expires_at = end_of_day(local_date(expires_at, tz), tz)
    if expires_at <= package.activated_at:
        raise Invalid("The expiry must be after the activation.", fields={"expires_at": "before activation"})
    before = snapshot(package)
    package.expires_at = expires_at
    package.save(update_fields=["expires_at"])
    record("package.set_expiry", actor=acting_user, obj=package, patient_id=package.patient_id, before=before,
           after=snapshot(package))
    return package


@clinic_action
def do_adjust(*, acting_user: Staff, patient_package: PatientPackage, change: int, reason: str):
    """Rule 9: an owner's manual adjustment (±n sessions remaining, reason required)."""
    require_role(acting_user, *OWNER, doing="adjust a package's count")
    reason = require_text(reason, "reason", "reason for the adjustment")
    if not isinstance(change, int) or isinstance(change, bool) or change == 0:
        raise Invalid("An adjustment changes the count by a whole number other than 0.", fields={"change": "non-zero integer"})
    packages = {p.pk: p for p in lock_patient_packages(patient_package.patient_id)}
    package = packages[patient_package.pk]
    if change > 0:
        # Sessions that visits still hold come back only by undoing them: a charge by removing
        # or voiding it (rule 7), a no-show under the policy (rule 13) by undoing the no-show.
        # Giving them back here too would let that undo give them back a second time, and leave
        # a later undo refused (its reversal would go below 0 used).
        held = PackageLedgerEntry.objects.filter(
            Q(invoice_line__isnull=False) | Q(appointment__status=AppointmentStatus.NO_SHOW),
            patient_package=package, kind=EntryKind.USE, reversed_by__isnull=True,
        ).count()
        free = package.sessions_used - held
        if change > free:
            raise Invalid(
                f"{held} of the {package.sessions_used} used sessions belong to charged visits or no-shows; "
                "remove those charges or undo those no-shows to give them back. "
                f"An adjustment can give back at most {max(free, 0)}.",
                fields={"change": f"at most {max(free, 0)}"},
            )
    entry = post_entry(package, kind=EntryKind.ADJUSTMENT, change=change, by=acting_user, reason=reason)
    record("package.adjust", actor=acting_user, obj=entry, patient_id=package.patient_id,
           after={"change": change, "reason": reason, "sessions_used": package.sessions_used})
    return entry


__all__ = ["do_adjust", "do_cancel_package", "do_sell_package", "do_set_expiry"]
