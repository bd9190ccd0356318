"""The check-in warning: what rules 1-6 would decide for a charge, in the front desk's words.

Reads only (preview_coverage); the check-in action decides again under its locks."""

from __future__ import annotations

from dataclasses import dataclass, field

from tally.clinic import rules
from tally.clinic.actions.coverage import first_sessions_given_back, preview_coverage
from tally.clinic.models import Appointment, ClinicSettings, Service

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

    @property
    def warns(self) -> bool:
        return not self.covered


def preview_check_in(appointment: Appointment, service: Service, clinic: ClinicSettings) -> CoveragePreview | None:
    """None when the patient holds no package (nothing to warn about)."""
    tz = clinic.tz
    visit_day = appointment.starts_at.astimezone(tz).date()
    # Checking in moves a first session the sale used for this visit to the visit's own line.
    given_back = first_sessions_given_back(appointment.pk)
    decision, packages = preview_coverage(appointment.patient_id, service.pk, visit_day, tz, given_back)
    if not packages:
        return None
    if decision.covered_by is not None:
        package = packages[decision.covered_by]
        number = package.sessions_used - given_back[package.pk] + 1
        return CoveragePreview(
            covered=True,
            headline=(f"{service.name} will be paid via {package.name}: session {number} of "
                      f"{package.sessions_total} · {package.sessions_total - number} left."),
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
                  f"{service.name} will be charged in full ({format_money(service.price, clinic.currency)})."),
        reasons=reasons,
    )
