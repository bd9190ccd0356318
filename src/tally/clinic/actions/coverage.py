"""Charging a service line: rules 1-6 decide, the ledger records, the line remembers why.

Internal to the actions: callers hold the transaction; this takes the package locks.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import cast

from django.db.models import Q

from .. import rules
from ..compiled import Compiled, insert
from ..errors import Conflict
from ..ledger import live_use_for_line, live_uses_for_visit, reverse_entry, use_session
from ..locking import lock_patient_packages, with_eligible_ids
from ..models import Appointment, Invoice, InvoiceLine, PatientPackage, Service, Staff
from ..models.billing import ZERO, LineKind
from .common import clinic_tz, local_date, now


def package_facts(package: PatientPackage, tz: dt.tzinfo) -> rules.PackageFacts:
    return rules.PackageFacts(
        id=package.pk,
        eligible_service_ids=package.eligible_ids,
        sold_on=local_date(package.sold_at, tz),
        sold_at=package.sold_at,
        activated=package.activated_at is not None,
        cancelled=package.cancelled_at is not None,
        sessions_remaining=package.sessions_remaining,
        last_valid_day=local_date(package.expires_at, tz) if package.expires_at else None,
    )


def decide_for(patient_id: int, service_id: int, invoice_date: dt.date,
               tz: dt.tzinfo) -> tuple[rules.Decision, dict[int, PatientPackage]]:
    packages = lock_patient_packages(patient_id)
    decision = rules.decide_coverage(service_id, invoice_date, [package_facts(p, tz) for p in packages])
    return decision, {p.pk: p for p in packages}


def preview_coverage(patient_id: int, service_id: int, invoice_date: dt.date, tz: dt.tzinfo,
                     given_back: Mapping[int, int] | None = None) -> tuple[rules.Decision, dict[int, PatientPackage]]:
    """What rules 1-6 would decide for a charge now, without locking or writing: the
    warning staff see before a check-in is saved. The action decides again under its locks.
    `given_back`: sessions per package that the charge gives back before deciding, as
    `charge_service` does for a visit's first session (`first_sessions_given_back`)."""
    packages = with_eligible_ids(list(PatientPackage.objects.filter(patient_id=patient_id).order_by("pk")))
    by_id = {p.pk: p for p in packages}
    # As release_first_session_of: a cancelled package's first session stays on the sale for
    # a service that package does not cover.
    given_back = {pid: n for pid, n in (given_back or {}).items()
                  if pid in by_id and not _stays_on_closed_sale(by_id[pid], service_id)}
    facts = [replace(f, sessions_remaining=f.sessions_remaining + given_back.get(p.pk, 0))
             for p in packages for f in [package_facts(p, tz)]]
    decision = rules.decide_coverage(service_id, invoice_date, facts)
    return _moved_first_session(decision, list(given_back), by_id, service_id), by_id


def first_sessions_given_back(on_file: list[InvoiceLine]) -> Counter[int]:
    """Per package, the sessions a sale used as this visit's first session (`on_file`: the
    visit's lines, `visit_lines_on_file`): checking the visit in moves each to the visit's own
    line (`release_first_session_of`), so the visit counts once."""
    return Counter(line.covered_by_id for line in _first_sessions(on_file) if line.covered_by_id is not None)


def session_number_for(package: PatientPackage, used_after: int, ignoring: Collection[int] = ()) -> int:
    """Which session a charge that leaves `used_after` used takes ("Session 3 of 10"): that
    count, unless a live line of the package already shows it (a covered line removed since
    gave its session back, rule 7, and the count came down), then the highest number at or
    below it that no live line shows: the session given back. No line already charged is
    renumbered (its invoice may have been printed). One exists: the package's live covered
    lines hold at most used_after - 1 sessions besides this one (a use without a line, an
    adjustment or a no-show, takes a number from none). `ignoring`: lines about to give theirs back."""
    taken = {number for pk, number in _NUMBERS_TAKEN.all(package.pk, used_after) if pk not in ignoring}
    return next((n for n in range(used_after, 0, -1) if n not in taken), used_after)


# Every covered charge asks it: compiled once per connection (compiled.py); the ORM's
# compiling was a sixth of a check-in's CPU.
_NUMBERS_TAKEN = Compiled(lambda package_id, used_after: InvoiceLine.objects.filter(
    covered_by_id=package_id, removed_at__isnull=True, invoice__voided_at__isnull=True,
    session_number__lte=used_after,
).values_list("pk", "session_number"), int, int)


# What covering a line writes on it (`cover_line`), for its callers' save(update_fields=...).
COVER_FIELDS = ["covered_by", "session_number", "sessions_left", "amount", "not_covered_reason"]


def cover_line(line: InvoiceLine, package: PatientPackage, *, by: Staff | None, reason: str = "") -> None:
    entry = use_session(package, by=by, invoice_line=line, reason=reason)
    _mark_covered(line, package, entry.used_after, ignoring=[line.pk] if line.pk else [])


def _mark_covered(line: InvoiceLine, package: PatientPackage, used_after: int, ignoring: Collection[int] = ()) -> None:
    """Write COVER_FIELDS on the line: paid via `package`, the charge leaving `used_after` used."""
    line.covered_by = package
    line.session_number = session_number_for(package, used_after, ignoring=ignoring)
    line.sessions_left = package.sessions_total - used_after
    line.amount = ZERO
    line.not_covered_reason = None


def charge_service(
    invoice: Invoice,
    service: Service,
    *,
    by: Staff | None,
    appointment: Appointment | None = None,
    locked_packages: list[PatientPackage] | None = None,
    on_file: list[InvoiceLine] | None = None,
) -> InvoiceLine:
    """Add a service line to an invoice and let rules 1-6 decide whether a package covers it.

    `locked_packages`: the patient's packages as the caller just locked them in this
    transaction (`lock_patient_packages`), so they are not locked and read a second time.
    They are read again anyway when releasing a first session moved a count.
    `on_file`: the visit's lines as the caller just read them (`visit_lines_on_file`), under
    the appointment's lock, so they are not read a second time."""
    tz = clinic_tz()
    pending_first: list[InvoiceLine] = []
    released: list[InvoiceLine] = []
    if appointment is not None:
        released, pending_first = release_first_session_of(appointment, service, by=by, on_file=on_file)
    invoice_date = local_date(invoice.issued_at, tz)
    if locked_packages is not None and not released:
        packages = {p.pk: p for p in locked_packages}
        decision = rules.decide_coverage(service.pk, invoice_date, [package_facts(p, tz) for p in locked_packages])
    else:
        decision, packages = decide_for(invoice.patient_id, service.pk, invoice_date, tz)
    moved_first = False
    if released:
        moved = _moved_first_session(decision, [line.patient_package_id for line in released
                                                if line.patient_package_id is not None], packages, service.pk)
        moved_first, decision = moved is not decision, moved
    line = InvoiceLine(
        invoice=invoice,
        kind=LineKind.SERVICE,
        service=service,
        appointment=appointment,
        description=service.name,
        list_price=service.price,
        amount=service.price,
        not_covered_reason=decision.reason,
        coverage_decision=decision.as_record() | {"invoice_date": invoice_date.isoformat(), "at": now().isoformat()}
        | ({"first_session": True} if moved_first else {}),
        created_by=by,
    )
    if decision.covered_by is None:
        # A first session of a sale not yet paid stays on the sale: the payment that activates
        # it uses it on this line (rule 5), so the visit is counted then, and once.
        insert(line)
        return line
    if appointment is not None and on_file is None:
        # A check-in (`on_file`) keeps a charge on file instead of charging again, and a booked
        # visit holds no no-show session: only the other charges of a visit need to ask.
        refuse_a_second_session(appointment.pk)
    # Covered now: a pending sale's first session for this visit is no longer needed, or its
    # activation would count the visit a second time.
    _remove_first_session_lines(pending_first, NOT_NEEDED)
    # Covered: the line is written covered (one INSERT, no UPDATE after it), then its session
    # is used; the entry points at the line, so the line comes first. The package is locked
    # and was read under the lock, so the session the ledger gives is the next one.
    package = packages[decision.covered_by]
    used_after = package.sessions_used + 1
    _mark_covered(line, package, used_after)
    insert(line)
    entry = use_session(package, by=by, invoice_line=line)
    if entry.used_after != used_after:  # never expected: the count moved under the lock
        raise Conflict("The package changed while this was being saved; please try again.")
    return line


def refuse_a_second_session(appointment_id: int) -> None:
    """One visit, one session (rules 2 and 13): a charge naming a visit that its own charge or
    its no-show (the clinic's no-show policy) counted already is refused rather than use a
    second session for it, as a no-show of a visit counted already uses none (`do_mark_no_show`)
    and the apply_to_line fix refuses. A sale's first session for the visit does not count
    here: rule 5 moves it onto the charge (`release_first_session_of`), or a cancelled
    package's stays on its sale for a service that package does not cover.
    Call with the appointment locked (every charge of a visit, and its no-show, lock it first)."""
    counting = live_uses_for_visit(appointment_id).filter(
        Q(invoice_line__isnull=True) | Q(invoice_line__kind=LineKind.SERVICE),
    ).select_related("patient_package", "invoice_line__invoice").order_by("pk").first()
    if counting is None:
        return
    package = counting.patient_package
    if counting.invoice_line is None:
        raise Conflict(f"This visit was a no-show and used a session of {package.name} under the clinic's no-show "
                       "policy; one visit uses one session. To charge the visit, undo the no-show first (its "
                       "session comes back).", fields={"appointment_id": "visit already counted"})
    line = counting.invoice_line
    raise Conflict(f"This visit is already counted: its charge on {line.invoice.number} ({line.description}) used a "
                   f"session of {package.name}, and one visit uses one session. Remove that line first to charge "
                   "the visit otherwise, or charge this service without naming the visit.",
                   fields={"appointment_id": "visit already counted"})


def _moved_first_session(decision: rules.Decision, released: list[int],
                         packages: dict[int, PatientPackage], service_id: int) -> rules.Decision:
    """Rule 5: a first session the sale used for this visit moves to the visit's own line even
    where rules 4-6 would not cover that line now (a visit the day before the sale: "already
    was" treated), as it does when the visit was charged before the sale (`use_first_session`).
    Otherwise checking the visit in would lose the session the sale used for it.

    A cancelled package moves it too, even where rule 6 would pick another package: the
    session was used before the cancellation, rule 11 keeps used sessions used, and a closed
    package could never use the session given back. The move uses nothing new (a reversal and
    a use, the count unchanged), and the visit is not billed again for a session the patient
    already used."""
    for package_id in released:
        package = packages.get(package_id)
        if package is None or service_id not in package.eligible_ids:
            continue
        if decision.covered_by is None or package.cancelled_at is not None:
            considered = tuple((pid, None if pid == package.pk else why) for pid, why in decision.considered)
            return rules.Decision(covered_by=package.pk, reason=None, considered=considered)
    return decision


# Every check-in asks it: compiled once per connection (compiled.py).
_VISIT_LINES = Compiled(lambda appointment_id: InvoiceLine.objects.filter(
    appointment_id=appointment_id, kind__in=[LineKind.SERVICE, LineKind.FIRST_SESSION], removed_at__isnull=True,
    invoice__voided_at__isnull=True,
).order_by("pk"), int)


def visit_lines_on_file(appointment_id: int) -> list[InvoiceLine]:
    """The visit's live service lines (its charges) and sale first-session lines, oldest first:
    one read for what a check-in needs to know, whether the visit is charged already (rule 2)
    and which first session its charge takes over (rule 5)."""
    return _VISIT_LINES.all(appointment_id)


def _first_sessions(lines: list[InvoiceLine]) -> list[InvoiceLine]:
    return [line for line in lines if line.kind == LineKind.FIRST_SESSION]


MOVED_TO_VISIT = "first session moved to the visit's own line"
NOT_NEEDED = "first session not needed: the visit's own charge was covered"
# The sale came after the visit's charge and its first session covered that charge (rule 5).
USED_ON_VISIT_CHARGE = "first session used on the visit's own charge"
# Why a sale's first-session line was removed for its visit: undoing the visit's check-in gives
# each back to the sale, whichever came first, the check-in or the sale.
GIVEN_TO_VISIT = (MOVED_TO_VISIT, NOT_NEEDED, USED_ON_VISIT_CHARGE)


def released_first_sessions_of(appointment: Appointment) -> list[InvoiceLine]:
    """The sale first-session lines a check-in of this visit released, or that a sale after the
    check-in gave to its charge, one per package whose sale still stands: what undoing the
    check-in gives back (rule 5's session was the sale's).
    A package cancelled since gets it back too: its count is as it was at the cancellation
    (rule 11), and moving the session back onto the sale uses nothing new."""
    lines = InvoiceLine.objects.filter(
        appointment_id=appointment.pk, kind=LineKind.FIRST_SESSION, removed_at__isnull=False,
        removal_reason__in=GIVEN_TO_VISIT, invoice__voided_at__isnull=True,
    ).order_by("-pk")
    latest: dict[int | None, InvoiceLine] = {}
    for line in lines:
        latest.setdefault(line.patient_package_id, line)
    return sorted(latest.values(), key=lambda line: line.pk)


def restore_first_sessions(lines: list[InvoiceLine], *, by: Staff | None,
                           given_back: Collection[int] = ()) -> list[InvoiceLine]:
    """Undoing a check-in puts the sale's first session back on the sale, as before it: used
    again if the package is active (rule 5), left for the payment that activates it if it is
    pending, and not put back if the package is active but used up since.
    `given_back`: the packages whose use on the visit's own line the undo just reversed. A
    cancelled package gets its first session back only from one of those, so the session moves
    back and its count stays as it was; anything else would be a new use of a closed package."""
    restored = []
    for old in lines:
        package = PatientPackage.objects.get(pk=cast(int, old.patient_package_id))  # a first session names its package
        if package.cancelled_at is not None and package.pk not in given_back:
            continue
        if InvoiceLine.objects.filter(patient_package=package, kind=LineKind.FIRST_SESSION,
                                      removed_at__isnull=True, invoice__voided_at__isnull=True).exists():
            continue
        if package.activated_at is not None and package.sessions_remaining <= 0:
            # Used up since (an owner's adjustment): no session to give the sale. A line left
            # uncovered would be a first session that used nothing on an active package, which a
            # later check-in of the visit would take for one waiting for the sale's payment.
            continue
        line = InvoiceLine(
            invoice_id=old.invoice_id, kind=LineKind.FIRST_SESSION, patient_package=package,
            package_id=old.package_id, service_id=old.service_id, appointment_id=old.appointment_id,
            description=old.description, list_price=ZERO, amount=ZERO, created_by=by,
        )
        insert(line)
        if package.activated_at is not None:
            cover_line(line, package, by=by, reason="check-in undone: the first session is the sale's again")
            line.save(update_fields=COVER_FIELDS)
        restored.append(line)
    return restored


def release_first_session_of(appointment: Appointment, service: Service, *, by: Staff | None,
                             on_file: list[InvoiceLine] | None = None
                             ) -> tuple[list[InvoiceLine], list[InvoiceLine]]:
    """A visit whose first session was already used at the sale is charged on its own line;
    the sale's first-session line gives its session back so the visit counts once.
    Returns the lines released, and the first-session lines for this visit whose
    sale is not paid yet (nothing used): those are left to the payment that activates it.
    A cancelled package's first session stays on the sale when the visit is charged a
    service that package does not cover: it was used before the cancellation (rule 11), and
    the closed package could never use it again."""
    lines = _first_sessions(on_file if on_file is not None else visit_lines_on_file(appointment.pk))
    used = [line for line in lines if line.covered_by_id is not None
            and not _stays_on_closed_sale(PatientPackage.objects.get(pk=line.covered_by_id), service.pk)]
    for line in used:
        uncover_line(line, by=by, reason=MOVED_TO_VISIT)
    _remove_first_session_lines(used, MOVED_TO_VISIT)
    return used, [line for line in lines if line.covered_by_id is None]


def _stays_on_closed_sale(package: PatientPackage, service_id: int) -> bool:
    return package.cancelled_at is not None and not package.eligible_services.filter(pk=service_id).exists()


def _remove_first_session_lines(lines: list[InvoiceLine], reason: str) -> None:
    for line in lines:
        line.removed_at = now()
        line.removal_reason = reason
        line.save(update_fields=["removed_at", "removal_reason"])


def uncover_line(line: InvoiceLine, *, by: Staff | None, reason: str) -> None:
    """Rule 7: undoing a covered charge writes a reversal and the session comes back."""
    entry = live_use_for_line(line)
    if entry is not None:
        reverse_entry(entry, by=by, reason=reason)
