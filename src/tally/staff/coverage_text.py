"""The check-in warning: what rules 1-6 would decide for a charge, in the front desk's words.

Reads only (preview_coverage); the check-in action decides again under its locks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from tally.clinic import rules
from tally.clinic.actions.coverage import (
    first_sessions_given_back,
    preview_coverage,
    session_number_for,
    visit_lines_on_file,
)
from tally.clinic.actions.visits import charge_kept_at_check_in
from tally.clinic.errors import ClinicError
from tally.clinic.models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    PatientPackage,
    Service,
)
from tally.clinic.models.billing import LineKind

from .templatetags.staff_tags import format_money

WHY = {
    rules.PACKAGE_NOT_PAID: "is not fully paid yet, so it covers nothing",
    rules.CHARGED_BEFORE_PURCHASE: "was sold after this visit's date",
    rules.PACKAGE_EXPIRED: "had expired by this visit's date",
    rules.PACKAGE_EXHAUSTED: "has no session left",
    rules.PACKAGE_CANCELLED: "is cancelled",
}


@dataclass
class CoveragePreview:
    covered: bool
    headline: str
    reasons: list[str] = field(default_factory=list)
    # The visit is charged already (a manual invoice): the charge the check-in keeps, or
    # `refused` when the choice asks for another charge, which the check-in refuses.
    charged_on: InvoiceLine | None = None
    refused: bool = False
    # Said, not asked: No Charges beside a package that would pay the visit (`preview_no_charges`).
    note: bool = False

    @property
    def warns(self) -> bool:
        """Asks staff to confirm before saving; a refused choice is not worth confirming."""
        return not self.covered and not self.refused and not self.note


def preview_charged_visit(appointment: Appointment, charge: str, service: Service | None,
                          clinic: ClinicSettings) -> CoveragePreview | None:
    """For a visit already charged on a manual invoice (rule 2: its session is used), what the
    check-in does with that charge: keeps it, or refuses the choice. None when it has none."""
    try:
        kept = charge_kept_at_check_in(appointment, visit_lines_on_file(appointment.pk),
                                       service=service if charge == "other" else None, no_charges=charge == "none")
    except ClinicError as refusal:
        return CoveragePreview(covered=False, headline=refusal.message, refused=True)
    if kept is None:
        return None
    if (package := kept.covered_by) is not None:
        how = f"paid via {package.name} (session {kept.session_number} of {package.sessions_total})"
    else:
        how = format_money(kept.amount, clinic.currency)
    return CoveragePreview(
        covered=True, charged_on=kept,
        headline=(f"This visit is already charged on {Invoice(pk=kept.invoice_id).number}: {kept.description}, "
                  f"{how}. Checking in will not charge it again."),
    )


def preview_no_charges(appointment: Appointment, clinic: ClinicSettings) -> CoveragePreview | None:
    """No Charges uses no session: when a package the patient holds would pay the booked service,
    which one, since the investigator will list the visit as NO_CHARGES. None otherwise."""
    tz = clinic.tz
    given_back = first_sessions_given_back(visit_lines_on_file(appointment.pk))
    decision, packages = preview_coverage(appointment.patient_id, appointment.service_id,
                                          appointment.starts_at.astimezone(tz).date(), tz, given_back)
    if decision.covered_by is None:
        return None
    package = packages[decision.covered_by]
    return CoveragePreview(
        covered=False, note=True,
        headline=(f"No Charges: no session of {package.name} is used, though it would pay "
                  f"{appointment.service.name}; the investigator will list this visit as checked in with No "
                  "Charges. Choose “Charge the booked service” to use the session."),
    )


def first_sessions_coming_back(given_back: Mapping[int, int], packages: Mapping[int, PatientPackage],
                               service: Service, paying: int) -> str:
    """What the check-in does to another package's count: a first session its sale used for this
    visit comes back to it when the visit's charge is paid another way (rule 6 picks another
    package) — unless the package is closed and does not cover the service (rule 11: it stays)."""
    said = ""
    for package_id, sessions in given_back.items():
        other = packages.get(package_id)
        if other is None or package_id == paying or (other.cancelled_at is not None
                                                     and service.pk not in other.eligible_ids):
            continue
        said += (f" The first session {other.name} used for this visit at its sale comes back to it "
                 f"({other.sessions_used - sessions} of {other.sessions_total} used).")
    return said


def used_for_no_visit(appointment: Appointment, service: Service, day: dt.date, tz: dt.tzinfo) -> str:
    """A session the same service used on the visit's day on an invoice line tied to no visit
    (added on an invoice's page): if it was this visit, checking in uses a second one for it."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    lines = InvoiceLine.objects.filter(
        invoice__patient_id=appointment.patient_id, invoice__issued_at__gte=start,
        invoice__issued_at__lt=start + dt.timedelta(days=1), invoice__voided_at__isnull=True, kind=LineKind.SERVICE,
        service_id=service.pk, appointment__isnull=True, covered_by__isnull=False, removed_at__isnull=True,
    ).select_related("invoice", "covered_by").order_by("pk")
    return "".join(
        f" {service.name} is already charged the same day on {line.invoice.number}, for no visit, paid via "
        f"{line.covered_by.name} (session {line.session_number}): if that was this visit, remove that line "
        "first, or this check-in uses a second session for it."
        for line in lines if line.covered_by is not None
    )


def preview_check_in(appointment: Appointment, service: Service, clinic: ClinicSettings) -> CoveragePreview | None:
    """None when the patient holds no package (nothing to warn about)."""
    tz = clinic.tz
    visit_day = appointment.starts_at.astimezone(tz).date()
    # Checking in moves a first session the sale used for this visit to the visit's own line.
    on_file = visit_lines_on_file(appointment.pk)
    given_back = first_sessions_given_back(on_file)
    decision, packages = preview_coverage(appointment.patient_id, service.pk, visit_day, tz, given_back)
    if not packages:
        return None
    if decision.covered_by is not None:
        package = packages[decision.covered_by]
        used_after = package.sessions_used - given_back[package.pk] + 1
        moving = [line.pk for line in on_file if line.kind == LineKind.FIRST_SESSION]
        number = session_number_for(package, used_after, ignoring=moving)
        twice = used_for_no_visit(appointment, service, visit_day, tz)
        return CoveragePreview(
            covered=True, note=bool(twice),
            headline=(f"{service.name} will be paid via {package.name}: session {number} of "
                      f"{package.sessions_total} · {package.sessions_total - used_after} left."
                      + first_sessions_coming_back(given_back, packages, service, package.pk) + twice),
        )
    eligible_ids = set().union(*(p.eligible_ids for p in packages.values()))
    names = dict(Service.objects.filter(pk__in=eligible_ids).values_list("pk", "name"))
    reasons = []
    for package_id, reason in decision.considered:
        package = packages[package_id]
        if reason == rules.SERVICE_NOT_IN_PACKAGE:
            covers = ", ".join(sorted(names.get(i, "?") for i in package.eligible_ids)) or "nothing"
            reasons.append(f"{package.name} does not include {service.name}; it covers only {covers}.")
        else:
            reasons.append(f"{package.name} {WHY.get(reason or '', 'cannot cover it')}.")
    return CoveragePreview(
        covered=False,
        headline=(f"{appointment.patient.full_name} holds a package, but it will not cover this visit: "
                  f"{service.name} will be charged in full ({format_money(service.price, clinic.currency)})."
                  + first_sessions_coming_back(given_back, packages, service, paying=0)),
        reasons=reasons,
    )
