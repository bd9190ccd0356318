"""The investigator's one-click fixes (SPEC.md "Fixes"). Each is one audited action that
re-runs rules 1-6, and is idempotent: repeating it changes nothing more.

A fix never applies a package to a line whose invoice is already paid (409: refund the
payment first); the package being investigated is context, rule 6 still decides,
except for an owner's explicit override.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import rules
from ..audit import record, snapshot
from ..errors import Conflict, Invalid, NotFound
from ..ledger import live_uses_for_visit
from ..locking import lock_appointment, lock_invoice, lock_patient_packages
from ..models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    PackageLedgerEntry,
    PatientPackage,
    Service,
    Staff,
    Tombstone,
)
from ..models.billing import LineKind
from ..models.ledger import EntryKind
from ..models.scheduling import AppointmentStatus, TombstoneKind
from ..money import format_money
from .billing import activate_paid_off_sales, activated_note, live_charges, load_invoice
from .common import (
    DESK,
    OWNER,
    clinic_action,
    clinic_tz,
    local_date,
    now,
    require_role,
    require_text,
)
from .coverage import charge_service, cover_line, package_facts, uncover_line
from .sales import do_adjust
from .visits import do_check_in

# Why a package cannot cover a line even by an owner's override: it is unpaid, closed or used
# up (a use would pass its total), or the service is not one it covers. The investigation page
# offers no override where one of these holds.
NOT_BY_OVERRIDE = frozenset({rules.PACKAGE_NOT_PAID, rules.PACKAGE_CANCELLED, rules.SERVICE_NOT_IN_PACKAGE,
                             rules.PACKAGE_EXHAUSTED})


@dataclass
class FixResult:
    applied: bool
    ledger_entry: PackageLedgerEntry | None
    message: str


def _live_service_line(line_id: int, patient_id: int | None) -> InvoiceLine:
    line = InvoiceLine.objects.select_related("invoice").filter(pk=line_id).first()
    if line is None or (patient_id is not None and line.invoice.patient_id != patient_id):
        raise NotFound("No such invoice line for this patient.")
    if line.removed_at is not None or line.invoice.voided_at is not None:
        raise Conflict("That line was removed or its invoice voided; charge the visit again instead.")
    if line.kind != LineKind.SERVICE:
        raise Invalid("Only a service line can be paid via a package.", fields={"line_id": "not a service line"})
    return line


def _latest_entry(package_ids: list[int]) -> PackageLedgerEntry | None:
    return PackageLedgerEntry.objects.filter(patient_package_id__in=package_ids).order_by("-id").first()


@clinic_action
def do_apply_to_line(
    *,
    acting_user: Staff,
    line_id: int,
    patient_id: int | None = None,
    context: PatientPackage | None = None,
    service_id: int | None = None,
    override: bool = False,
    reason: str = "",
) -> FixResult:
    """Apply a package to a charged line ("remove the service and add it back"), optionally
    first replacing its service with an eligible one. Rules 1-6 decide which package;
    an owner's override (with a reason) applies the context package instead."""
    require_role(acting_user, *(OWNER if override else DESK), doing="override package coverage")
    if override:
        reason = require_text(reason, "reason", "reason for the override")
        if context is None:
            raise Invalid("An override names the package to apply.", fields={"override": "needs a package"})
    line = _live_service_line(line_id, patient_id)
    if line.appointment_id is not None:
        # Locked first (locking.py's order), so a deletion cannot land in between (rule 8).
        if lock_appointment(line.appointment_id, include_deleted=True).deleted_at is not None:
            raise Conflict("That visit was permanently deleted: restore it from its tombstone first, "
                           "then its charge can use a package session.")
    invoice = lock_invoice(line.invoice_id)
    packages = {p.pk: p for p in lock_patient_packages(invoice.patient_id)}
    line.refresh_from_db()
    if line.removed_at is not None or invoice.voided_at is not None:  # removed while this waited for the lock
        raise Conflict("That line was removed or its invoice voided; charge the visit again instead.")
    before = snapshot(line)
    new_service = None
    if service_id is not None and service_id != line.service_id:
        new_service = Service.objects.filter(pk=service_id).first()
        if new_service is None:
            raise Invalid("No such service.", fields={"service_id": "unknown service"})
        if context is not None and service_id not in packages[context.pk].eligible_ids:
            raise Invalid(f"{new_service.name} is not covered by {context.name}.",
                          fields={"service_id": "not an eligible service"})
        if context is None and not any(service_id in p.eligible_ids for p in packages.values()):
            # Without a package as context, "eligible" is eligible for one of the patient's
            # packages: otherwise the fix would only re-price the line, applying nothing.
            raise Invalid(f"None of the patient's packages covers {new_service.name}.",
                          fields={"service_id": "not an eligible service"})
    if line.covered_by_id is not None and not override:
        return FixResult(False, None, "This line is already paid via a package.")
    if not override and line.appointment_id is not None and _visit_counted_elsewhere(line, line.appointment_id):
        raise Conflict("This visit is already counted: another of its charges, or the sale's first session, "
                       "used a session for it. One visit uses one session; an owner may adjust the count.")
    current = load_invoice(invoice.pk)
    if rules.paid_past_the_line(current.paid, current.total, line.amount):
        raise Conflict(f"{current.number} is already paid: refund that payment first, then apply the package.")
    tz = clinic_tz()
    invoice_date = local_date(invoice.issued_at, tz)
    if new_service is not None:
        if line.covered_by_id is not None:
            uncover_line(line, by=acting_user, reason=f"service changed to {new_service.name}")
            line.covered_by = None
            line.session_number = None
            line.sessions_left = None
        line.service = new_service
        line.description = new_service.name
        line.list_price = new_service.price
        line.amount = new_service.price
    packages = {p.pk: p for p in lock_patient_packages(invoice.patient_id)}
    if override:
        assert context is not None  # an override names its package (checked first)
        target = packages[context.pk]
        if line.covered_by_id == target.pk:
            # A repeat changes nothing, even where the override used the package's last session.
            return FixResult(False, None, f"This line is already paid via {target.name}.")
        why = rules.why_not(package_facts(target, tz), line.service_id, invoice_date)
        if why not in NOT_BY_OVERRIDE and target.sessions_remaining <= 0:
            # why_not names the first reason only: an override that may set aside the sale date
            # or the expiry still needs a session to use.
            why = rules.PACKAGE_EXHAUSTED
        if why in NOT_BY_OVERRIDE:
            raise Conflict(f"{target.name} cannot cover this line even by override: {why}.")
        if line.covered_by_id is not None:
            uncover_line(line, by=acting_user, reason=f"owner override to {target.name}: {reason}")
        cover_line(line, target, by=acting_user, reason=f"owner override: {reason}")
        decision = {"covered_by": target.pk, "reason": None, "override": True, "override_reason": reason,
                    "overridden_rule": why, "considered": [{"patient_package_id": target.pk, "reason": None}]}
    else:
        facts = [package_facts(p, tz) for p in packages.values()]
        result = rules.decide_coverage(line.service_id, invoice_date, facts)
        decision = result.as_record()
        if result.covered_by is None:
            # With a new service too: a fix applies a package, it never only re-prices a visit
            # (a 90-minute treatment billed as 60, and still no session used).
            raise Conflict(_why_sentence(result.reason))
        cover_line(line, packages[result.covered_by], by=acting_user, reason="fix: apply package to line")
    line.coverage_decision = decision | {"invoice_date": invoice_date.isoformat(), "at": now().isoformat(),
                                         "by_fix": True}
    line.save()
    activated = activate_paid_off_sales([invoice.pk], at=now(), by=acting_user)  # the line costs nothing now
    record("fix.apply_to_line", actor=acting_user, obj=line, patient_id=invoice.patient_id, before=before,
           after=snapshot(line) | {"override": override, "reason": reason} | activated_note(activated))
    entry = _latest_entry(list(packages))
    return FixResult(True, entry, "Package applied.")


def _visit_counted_elsewhere(line: InvoiceLine, appointment_id: int) -> bool:
    """A live use for the line's visit (`appointment_id`) that is not this line's own (the
    ledger names the visit of every use: its line's, or the no-show's)."""
    return live_uses_for_visit(appointment_id).exclude(invoice_line_id=line.pk).exists()


def charged_said(line: InvoiceLine | None) -> str:
    """What a fix's charge came to, after its "Charged.": the session it used, or that it is
    to be paid in full and why no package covers it (rules 1-6 decided, not the fix)."""
    if line is None:
        return ""
    if line.covered_by is not None:
        package = line.covered_by
        return f" Paid via {package.name}: session {line.session_number} of {package.sessions_total}."
    invoice = line.invoice
    return (f" {format_money(line.amount, ClinicSettings.load().currency)} to pay on {invoice.number}. "
            + _why_sentence(line.not_covered_reason))


def _why_sentence(reason: str | None) -> str:
    sentences = {
        rules.PACKAGE_NOT_PAID: "the package is not fully paid yet",
        rules.CHARGED_BEFORE_PURCHASE: "the visit is dated before the package was sold",
        rules.PACKAGE_EXPIRED: "the package had expired by the visit's date",
        rules.PACKAGE_EXHAUSTED: "the package has no session left",
        rules.PACKAGE_CANCELLED: "the package is cancelled",
        rules.SERVICE_NOT_IN_PACKAGE: "no package of the patient covers this service",
        None: "the patient holds no package",
    }
    return f"No package can cover this line: {sentences.get(reason, reason)}."


@clinic_action
def do_use_first_session(*, acting_user: Staff, context: PatientPackage, line_id: int,
                         service_id: int | None = None) -> FixResult:
    """Use the sale's first session on the visit of the sale day that was left uncounted;
    with `service_id`, the line's service is first replaced by that eligible one (a visit
    booked as an eligible service but charged another)."""
    require_role(acting_user, *DESK, doing="apply fixes")
    line = _live_service_line(line_id, context.patient_id)
    tz = clinic_tz()
    if local_date(line.invoice.issued_at, tz) != local_date(context.sold_at, tz):
        raise Invalid("The first session belongs to a visit on the day of the sale.",
                      fields={"line_id": "not on the sale day"})
    return do_apply_to_line(acting_user=acting_user, line_id=line_id, patient_id=context.patient_id,
                            context=context, service_id=service_id)


def mark_attended(appointment: Appointment) -> None:
    """Checked in without a charge of its own: for a visit whose charge is already on file."""
    appointment.status = AppointmentStatus.ATTENDED
    appointment.checked_in_at = appointment.checked_in_at or now()
    appointment.save(update_fields=["status", "checked_in_at"])


@clinic_action
def do_check_in_and_charge(*, acting_user: Staff, appointment_id: int, patient_id: int | None = None) -> FixResult:
    """Record the missing check-in and charge: a past visit still booked is checked in; an
    attended visit with No Charges or with no charge gets its booked service charged on an
    invoice dated at its start. Rules 1-6 decide coverage."""
    require_role(acting_user, *DESK, doing="apply fixes")
    appointment = lock_appointment(appointment_id)
    if appointment.deleted_at is not None or (patient_id is not None and appointment.patient_id != patient_id):
        raise NotFound("No such appointment for this patient.")
    if appointment.status == AppointmentStatus.BOOKED:
        if live_charges(appointment).exists():
            # Charged on a manual invoice (rule 2) but never checked in: only the check-in is
            # missing. Checking it in as usual would charge the visit, and use a session, twice.
            before = snapshot(appointment)
            mark_attended(appointment)
            record("fix.check_in_and_charge", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
                   before=before, after=snapshot(appointment))
            return FixResult(True, None, "Checked in; its charge was already on file.")
        before = snapshot(appointment)
        checked_in, _, line = do_check_in(acting_user=acting_user, appointment=appointment)
        record("fix.check_in_and_charge", actor=acting_user, obj=checked_in, patient_id=checked_in.patient_id,
               before=before, after=snapshot(checked_in) | {"line_id": line.pk if line else None})
        return FixResult(True, line.ledger_entries.order_by("-id").first() if line else None, "Checked in and charged." + charged_said(line))
    if appointment.status != AppointmentStatus.ATTENDED:
        raise Conflict(f"This appointment is {appointment.status.replace('_', ' ')}; it was not a visit.")
    has_charge = InvoiceLine.objects.filter(
        appointment=appointment, kind__in=[LineKind.SERVICE, LineKind.FIRST_SESSION], removed_at__isnull=True,
        invoice__voided_at__isnull=True,
    ).exists()
    if has_charge:
        return FixResult(False, None, "This visit is already charged.")
    lock_patient_packages(appointment.patient_id)
    before = snapshot(appointment)
    appointment.no_charges = False
    appointment.save(update_fields=["no_charges"])
    invoice = Invoice.objects.create(patient_id=appointment.patient_id, issued_at=appointment.starts_at,
                                     created_by=acting_user)
    line = charge_service(invoice, appointment.service, by=acting_user, appointment=appointment)
    record("fix.check_in_and_charge", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"line_id": line.pk})
    return FixResult(True, line.ledger_entries.order_by("-id").first(), "Charged." + charged_said(line))


@clinic_action
def do_recreate_from_tombstone(*, acting_user: Staff, tombstone_id: int, patient_id: int | None = None) -> FixResult:
    """Restore a permanently deleted visit as attended, with its booked service charged on an
    invoice dated at its start. The tombstone stays as history."""
    require_role(acting_user, *DESK, doing="apply fixes")
    tombstone = Tombstone.objects.filter(pk=tombstone_id, kind=TombstoneKind.APPOINTMENT).first()
    # A visit's tombstone always names its visit; one that does not is no visit to restore.
    if tombstone is None or tombstone.appointment_id is None or (
            patient_id is not None and tombstone.patient_id != patient_id):
        raise NotFound("No such deleted visit for this patient.")
    appointment = lock_appointment(tombstone.appointment_id, include_deleted=True)
    if appointment.deleted_at is None:
        return FixResult(False, None, "This visit was already restored.")
    if appointment.status in (AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW) or (
        appointment.status == AppointmentStatus.BOOKED and appointment.starts_at > now()
    ):
        # Restoring means "as attended, charged": never for a booking that was not a visit.
        raise Conflict(f"This appointment was {appointment.status.replace('_', ' ')}"
                       f"{' for a time still to come' if appointment.status == AppointmentStatus.BOOKED else ''}, "
                       "not a visit: book it again instead.")
    before = snapshot(appointment)
    appointment.deleted_at = None
    appointment.status = AppointmentStatus.BOOKED
    appointment.no_charges = False
    appointment.save(update_fields=["deleted_at", "status", "no_charges"])
    record("fix.recreate_from_tombstone", actor=acting_user, obj=appointment, patient_id=appointment.patient_id,
           before=before, after=snapshot(appointment) | {"tombstone_id": tombstone.pk})
    if live_charges(appointment).exists():
        mark_attended(appointment)
        return FixResult(True, None, "Visit restored; its charge was still on file.")
    _, _, line = do_check_in(acting_user=acting_user, appointment=appointment)
    return FixResult(True, line.ledger_entries.order_by("-id").first() if line else None, "Visit restored and charged." + charged_said(line))


@clinic_action
def do_adjust_fix(*, acting_user: Staff, context: PatientPackage, change: int, reason: str,
                  used_seen: int | None = None) -> FixResult:
    """The `adjust` fix: an owner's manual adjustment (rule 9). With `used_seen` (the API's
    `sessions_used`: the count the owner looked at) it is idempotent, as every fix is: the same
    adjustment found just made on that count changes nothing (a resend, a second click), and a
    count that moved otherwise since is a Conflict ("look again"), never an adjustment stacked
    on a count nobody saw."""
    require_role(acting_user, *OWNER, doing="adjust a package's count")
    if used_seen is not None:
        package = {p.pk: p for p in lock_patient_packages(context.patient_id)}[context.pk]
        if package.sessions_used != used_seen:
            last = package.ledger_entries.order_by("-seq").first()
            if (last is not None and last.kind == EntryKind.ADJUSTMENT and last.change == change
                    and last.reason == reason.strip() and last.used_after + last.change == used_seen
                    and last.used_after == package.sessions_used):
                return FixResult(False, last, f"This adjustment is already recorded: {package.sessions_used} of "
                                              f"{package.sessions_total} used.")
            raise Conflict(f"The count changed since you looked: {package.sessions_used} of {package.sessions_total} "
                           f"used now, {used_seen} then. Look again before adjusting.")
    entry = do_adjust(acting_user=acting_user, patient_package=context, change=change, reason=reason)
    return FixResult(True, entry, "Adjusted.")

