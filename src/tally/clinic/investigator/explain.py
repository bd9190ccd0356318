"""The investigator's pure core: replay one patient's history and say why each count is
what it is (SPEC.md, "The investigator"). Plain data in (facts.History), plain data out.
"""

from __future__ import annotations

import datetime as dt
import functools
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from .. import rules
from ..money import format_money
from .facts import EntryFact, History, InvoiceFact, LineFact, PackageFact, VisitFact

# Finding codes (SPEC.md table).
FIRST_SESSION_NOT_USED = "FIRST_SESSION_NOT_USED"
NOT_CHECKED_IN = "NOT_CHECKED_IN"
NO_CHARGES = "NO_CHARGES"
NOT_INVOICED = "NOT_INVOICED"
APPOINTMENT_DELETED = "APPOINTMENT_DELETED"
SCHEDULE_GAP = "SCHEDULE_GAP"
SERVICE_NOT_IN_PACKAGE = rules.SERVICE_NOT_IN_PACKAGE
PACKAGE_NOT_PAID = rules.PACKAGE_NOT_PAID
CHARGED_BEFORE_PURCHASE = rules.CHARGED_BEFORE_PURCHASE
COVERED_BY_OTHER_PACKAGE = "COVERED_BY_OTHER_PACKAGE"
PACKAGE_EXHAUSTED = rules.PACKAGE_EXHAUSTED
PACKAGE_EXPIRED = rules.PACKAGE_EXPIRED
PACKAGE_CANCELLED = rules.PACKAGE_CANCELLED
POSSIBLE_DOUBLE_USE = "POSSIBLE_DOUBLE_USE"
LEDGER_MISMATCH = "LEDGER_MISMATCH"

# Every code, in SPEC.md's table order (filters and docs list them this way).
FINDING_CODES = (
    FIRST_SESSION_NOT_USED, NOT_CHECKED_IN, NO_CHARGES, NOT_INVOICED, APPOINTMENT_DELETED, SCHEDULE_GAP,
    SERVICE_NOT_IN_PACKAGE, PACKAGE_NOT_PAID, CHARGED_BEFORE_PURCHASE, COVERED_BY_OTHER_PACKAGE,
    PACKAGE_EXHAUSTED, PACKAGE_EXPIRED, PACKAGE_CANCELLED, POSSIBLE_DOUBLE_USE, LEDGER_MISMATCH,
)

SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
WARNING_CODES = {
    FIRST_SESSION_NOT_USED, NOT_CHECKED_IN, NO_CHARGES, NOT_INVOICED, APPOINTMENT_DELETED,
    PACKAGE_NOT_PAID, SERVICE_NOT_IN_PACKAGE, POSSIBLE_DOUBLE_USE,
}
# Findings that explain a count lower than staff expected / higher than they expected.
EXPLAINS_FEWER_USED = {
    FIRST_SESSION_NOT_USED, NOT_CHECKED_IN, NO_CHARGES, NOT_INVOICED, APPOINTMENT_DELETED, SCHEDULE_GAP,
    SERVICE_NOT_IN_PACKAGE, PACKAGE_NOT_PAID, CHARGED_BEFORE_PURCHASE, COVERED_BY_OTHER_PACKAGE,
    PACKAGE_EXHAUSTED, PACKAGE_EXPIRED, PACKAGE_CANCELLED, LEDGER_MISMATCH,
}
EXPLAINS_MORE_USED = {POSSIBLE_DOUBLE_USE, LEDGER_MISMATCH}


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    date: dt.date
    appointment_id: int | None = None
    invoice_id: int | None = None
    line_id: int | None = None
    tombstone_id: int | None = None
    fix: dict | None = None
    patient_package_id: int | None = None
    until: dt.date | None = None  # the end of a span (SCHEDULE_GAP)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["date"] = self.date.isoformat()
        data["until"] = self.until.isoformat() if self.until else None
        return data


@dataclass
class Investigation:
    summary: dict
    findings: list[Finding]
    timeline: list[dict] = field(default_factory=list)


def severity_of(code: str) -> str:
    if code == LEDGER_MISMATCH:
        return "error"
    return "warning" if code in WARNING_CODES else "info"


def worst_severity(severities: Iterable[str]) -> str | None:
    """The gravest of these severities (error, then warning, then info), or None for none."""
    return min(severities, key=SEVERITY_RANK.__getitem__, default=None)


# ---------------------------------------------------------------- the walk


# What stands in for a text staff typed when the investigation may not quote it (the support
# export without names: a reason may name the patient, a relative or a phone number).
LEFT_OUT = "[left out]"


class Walk:
    """Indexes over one history, shared by every package's explanation."""

    def __init__(self, history: History, *, quote_staff_text: bool = True):
        self.h = history
        self.quote_staff_text = quote_staff_text
        self.tz = history.tz
        self.today = history.now.astimezone(self.tz).date()
        self.invoices = {inv.id: inv for inv in history.invoices}
        self.lines: dict[int, LineFact] = {ln.id: ln for inv in history.invoices for ln in inv.lines}
        self.visits = {v.id: v for v in history.visits}
        self.packages = {p.id: p for p in history.packages}
        reversed_ids = {e.reverses_id for e in history.entries if e.reverses_id}
        self.live_uses = [e for e in history.entries if e.kind == "use" and e.id not in reversed_ids]
        self.entries_by_package: dict[int, list[EntryFact]] = defaultdict(list)
        for e in history.entries:
            self.entries_by_package[e.patient_package_id].append(e)
        self.live_uses_by_line: dict[int, list[EntryFact]] = defaultdict(list)
        self.live_uses_by_visit: dict[int, list[EntryFact]] = defaultdict(list)
        for e in self.live_uses:
            if e.invoice_line_id:
                self.live_uses_by_line[e.invoice_line_id].append(e)
            visit_id = e.appointment_id or (self.lines[e.invoice_line_id].appointment_id
                                            if e.invoice_line_id in self.lines else None)
            if visit_id:
                self.live_uses_by_visit[visit_id].append(e)
        self.live_lines_by_visit: dict[int, list[LineFact]] = defaultdict(list)
        for ln in self.lines.values():
            if ln.appointment_id and self.is_live(ln):
                self.live_lines_by_visit[ln.appointment_id].append(ln)
        self.tombstoned_visits = {t.appointment_id for t in history.tombstones if t.appointment_id}
        # A visit deleted, restored and deleted again has two tombstones: the latest one speaks.
        self.latest_tombstone: dict[int, int] = {}
        for t in sorted(history.tombstones, key=lambda t: (t.removed_at, t.id)):
            if t.appointment_id:
                self.latest_tombstone[t.appointment_id] = t.id
        self._days: dict[dt.datetime, dt.date] = {}
        self._counted_by: dict[int, frozenset[int]] = {}
        self._visit_reasons: dict[int, tuple[frozenset[int], str | None, LineFact | None]] = {}
        self.timeline: list[dict] | None = None  # the records every package's timeline shares
        # Indexes, so that each package's checks read only its own rows (not packages × lines).
        self._considered: dict[str | None, dict[int, str | None]] = {}  # by the decision's text
        self.lines_for_package: dict[int, list[LineFact]] = defaultdict(list)
        self.lines_covered_by: dict[int, list[LineFact]] = defaultdict(list)
        by_service: dict[int, list[LineFact]] = defaultdict(list)
        wrong_service: dict[tuple, bool] = {}  # (package, charged, booked) → looks like a wrong service
        self.first_session_lines: dict[int, list[LineFact]] = defaultdict(list)
        for ln in self.lines.values():
            if ln.covered_by is not None:
                self.lines_covered_by[ln.covered_by].append(ln)
            if ln.kind == "first_session" and ln.patient_package_id is not None:
                self.first_session_lines[ln.patient_package_id].append(ln)
            if ln.kind != "service" or not self.is_live(ln):
                continue
            if ln.covered_by is not None:
                by_service[ln.service_id or -1].append(ln)
            else:
                booked = self.visits[ln.appointment_id].service_id if ln.appointment_id in self.visits else None
                for package_id, reason in self.considered_by(ln).items():
                    package = self.packages.get(package_id)
                    if reason == SERVICE_NOT_IN_PACKAGE and package is not None:
                        key = (package_id, ln.service_id, booked)
                        if key not in wrong_service:
                            wrong_service[key] = looks_like_wrong_service(self, package, ln)
                        if not wrong_service[key]:
                            continue  # a different treatment: nothing to say about this package
                    self.lines_for_package[package_id].append(ln)
        self.line_order = {line_id: i for i, line_id in enumerate(self.lines)}
        for p in history.packages:  # covered by another package: the package's eligible services only
            for sid in p.eligible_service_ids:
                self.lines_for_package[p.id] += [ln for ln in by_service.get(sid, ()) if ln.covered_by != p.id]
            self.lines_for_package[p.id].sort(key=lambda ln: self.line_order[ln.id])
        self.live_uses_by_package: dict[int, list[EntryFact]] = defaultdict(list)
        for e in self.live_uses:
            self.live_uses_by_package[e.patient_package_id].append(e)
        self.visits_by_day: dict[dt.date, list[VisitFact]] = defaultdict(list)
        for v in history.visits:
            self.visits_by_day[self.local(v.starts_at)].append(v)

    # -- small helpers
    def staff_text(self, text: str) -> str:
        """A reason staff typed, or LEFT_OUT when this investigation may not quote it."""
        return text if self.quote_staff_text or not text else LEFT_OUT

    def considered_by(self, line: LineFact) -> dict[int, str | None]:
        """The packages rule 6 considered for a line, and why each did not cover it (None
        for the one that did). Decoded on first use: most lines never need it."""
        # Most lines share a few texts ("[]": no package held): decode each text once.
        considered = self._considered.get(line.considered_json)
        if considered is None:
            considered = self._considered[line.considered_json] = {
                c["patient_package_id"]: c["reason"] for c in line.considered}
        return considered

    def is_live(self, line: LineFact) -> bool:
        return line.removed_at is None and self.invoices[line.invoice_id].voided_at is None

    def local(self, moment: dt.datetime) -> dt.date:
        day = self._days.get(moment)
        if day is None:
            day = self._days[moment] = moment.astimezone(self.tz).date()
        return day

    def line_date(self, line: LineFact) -> dt.date:
        return self.local(self.invoices[line.invoice_id].issued_at)

    def service(self, service_id: int | None) -> str:
        return self.h.services.get(service_id or -1, "an unknown service")

    def money(self, amount: Decimal) -> str:
        return format_money(amount, self.h.currency)

    def last_valid_day(self, p: PackageFact) -> dt.date | None:
        return self.local(p.expires_at) if p.expires_at else None

    def in_window(self, p: PackageFact, day: dt.date) -> bool:
        """Whether a visit that day falls in the package's life: from the sale to its expiry."""
        if day < self.local(p.sold_at):
            return False
        end = self.last_valid_day(p)
        return end is None or day <= end

    def on_deleted_visit(self, line: LineFact) -> bool:
        """A charge of a permanently deleted visit: no fix applies a package to it (rule 8);
        restoring the visit from its tombstone does."""
        visit = self.visits.get(line.appointment_id or -1)
        return visit is not None and visit.deleted

    def paid_for(self, line: LineFact) -> bool:
        """Whether the line's invoice is paid, so that applying a package to the line is refused
        until that payment is refunded (the fixes' 409, SPEC.md "Fixes"): the test do_apply_to_line
        makes (rules.paid_past_the_line), on the same totals."""
        invoice = self.invoices[line.invoice_id]
        return rules.paid_past_the_line(invoice.paid, invoice.total, line.amount)

    def refund_first(self, line: LineFact) -> str:
        """What a finding whose fix waits for a refund says instead of offering it."""
        invoice = self.invoices[line.invoice_id]
        return (f" {invoice.number} is already paid ({self.money(invoice.paid)}): refund that payment first, "
                "then the package can be applied.")

    def could_cover_now(self, p: PackageFact, service_id: int | None, day: dt.date) -> bool:
        """Whether rules 1-6 would let this package cover the service on that day as it stands
        now: a fix that applies it is offered only then (else it would be refused, or only
        re-price the visit)."""
        facts = rules.PackageFacts(
            id=p.id, eligible_service_ids=p.eligible_service_ids, sold_on=self.local(p.sold_at), sold_at=p.sold_at,
            activated=p.activated_at is not None, cancelled=p.cancelled_at is not None,
            sessions_remaining=p.sessions_total - p.sessions_used, last_valid_day=self.last_valid_day(p))
        return service_id is not None and rules.why_not(facts, service_id, day) is None

    def status(self, p: PackageFact) -> str:
        if p.cancelled_at:
            return "cancelled"
        if p.activated_at is None:
            return "pending_payment"
        if p.expires_at and self.h.now > p.expires_at:
            return "expired"
        if p.sessions_total - p.sessions_used <= 0:
            return "exhausted"
        return "active"

    def visit_counted_by(self, visit_id: int) -> frozenset[int]:
        counted_by = self._counted_by.get(visit_id)
        if counted_by is None:
            counted_by = self._counted_by[visit_id] = frozenset(
                e.patient_package_id for e in self.live_uses_by_visit.get(visit_id, ()))
        return counted_by

    def visit_reason_for_all(self, visit: VisitFact) -> tuple[frozenset[int], str | None, LineFact | None]:
        """What no package changes about a visit, worked out once: the packages that counted
        it, the reason none did when it does not depend on the package, else its last line."""
        known = self._visit_reasons.get(visit.id)
        if known is not None:
            return known
        counted_by = self.visit_counted_by(visit.id)
        reason, line = None, None
        if counted_by:
            pass
        elif visit.deleted:
            reason = APPOINTMENT_DELETED
        elif visit.status == "cancelled":
            reason = "CANCELLED"
        elif visit.status == "no_show":
            reason = "NO_SHOW"
        elif visit.status == "booked":
            if self.local(visit.starts_at) < self.today:
                reason = NOT_CHECKED_IN
            else:  # a finding only once its day is over: the desk checks visits in all day long
                reason = "NOT_CHECKED_IN_YET" if visit.starts_at < self.h.now else "UPCOMING"
        elif visit.no_charges:
            reason = NO_CHARGES
        else:
            lines = [ln for ln in self.live_lines_by_visit.get(visit.id, ()) if ln.kind == "service"]
            if lines:
                line = lines[-1]
            else:
                reason = NOT_INVOICED
        known = self._visit_reasons[visit.id] = (counted_by, reason, line)
        return known

    def owner_package_for_visit(self, visit: VisitFact) -> PackageFact | None:
        """The package a visit-level finding belongs to: rule 6's order among the packages
        whose eligible services include the visit's and whose life includes its date."""
        day = self.local(visit.starts_at)
        candidates = [
            p for p in self.h.packages
            if visit.service_id in p.eligible_service_ids and self.in_window(p, day)
            and not (p.cancelled_at and self.local(p.cancelled_at) < day)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda p: (self.last_valid_day(p) or dt.date.max, p.sold_at, p.id))


def fmt_date(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


# ---------------------------------------------------------------- findings


def ledger_findings(w: Walk, p: PackageFact) -> list[Finding]:
    entries = sorted(w.entries_by_package.get(p.id, []), key=lambda e: e.seq)
    used = 0
    problems = []
    for expected_seq, e in enumerate(entries, start=1):
        used -= e.change
        if e.seq != expected_seq or e.used_after != used:
            problems.append(f"entry {e.seq} does not follow from the ones before it")
    if used != p.sessions_used:
        problems.append(f"the package shows {p.sessions_used} used but its ledger adds up to {used}")
    used_lines = {e.invoice_line_id for e in w.live_uses_by_package.get(p.id, []) if e.invoice_line_id}
    candidates = {ln.id: ln for ln in w.lines_covered_by.get(p.id, [])}
    candidates.update((lid, w.lines[lid]) for lid in used_lines if lid in w.lines)
    for ln in sorted(candidates.values(), key=lambda ln: w.line_order[ln.id]):
        uses = [e for e in w.live_uses_by_line.get(ln.id, []) if e.patient_package_id == p.id]
        if ln.covered_by == p.id and w.is_live(ln) and len(uses) != 1:
            problems.append(f"line “{ln.description}” on {w.invoices[ln.invoice_id].number} says it is covered "
                            f"but has {len(uses)} session(s) used for it")
        if uses and not w.is_live(ln):
            problems.append(f"line “{ln.description}” was removed or voided but its session was never given back")
    return [
        Finding(LEDGER_MISMATCH, "error",
                f"Integrity fault in {p.name}: {problem}. This should never happen; contact support "
                f"with patient {w.h.patient_number}.",
                w.today, fix=None, patient_package_id=p.id)
        for problem in problems
    ]


def nearest_eligible(w: Walk, p: PackageFact, service_id: int | None) -> int | None:
    if not p.eligible_service_ids:
        return None
    duration = w.h.service_durations.get(service_id or -1, 0)
    return min(sorted(p.eligible_service_ids),
               key=lambda sid: abs(w.h.service_durations.get(sid, 0) - duration))


@functools.lru_cache(maxsize=4096)
def family(name: str) -> str:
    return (name.split() or [""])[0].lower()


def looks_like_wrong_service(w: Walk, p: PackageFact, line: LineFact) -> bool:
    """A wrong service, not a different treatment: the visit was booked as an eligible
    service, or the charged one is a variant of an eligible one (same first word)."""
    visit = w.visits.get(line.appointment_id or -1)
    if visit is not None and visit.service_id in p.eligible_service_ids:
        return True
    charged = family(w.service(line.service_id))
    return any(family(w.service(sid)) == charged for sid in p.eligible_service_ids)


def line_findings(w: Walk, p: PackageFact) -> list[Finding]:
    findings: list[Finding] = []
    sale = w.invoices.get(p.sale_invoice_id)
    for line in w.lines_for_package.get(p.id, []):
        if line.kind != "service" or not w.is_live(line) or line.covered_by == p.id:
            continue
        day = w.line_date(line)
        considered = w.considered_by(line)
        what = f"Visit on {fmt_date(day)} was charged {w.service(line.service_id)}"
        base: dict[str, Any] = dict(date=day, appointment_id=line.appointment_id, invoice_id=line.invoice_id, line_id=line.id,
                    patient_package_id=p.id)
        if line.covered_by is not None:
            other = w.packages.get(line.covered_by)
            # Only when this package could have covered it too (rule 6 chose the other one);
            # an exhausted or expired package being replaced by its renewal is nothing to report.
            could_have = p.id in considered and considered[p.id] is None
            if could_have and line.service_id in p.eligible_service_ids and w.in_window(p, day) and other is not None:
                findings.append(Finding(COVERED_BY_OTHER_PACKAGE, "info",
                                        f"{what}; it used a session of {other.name} (sold "
                                        f"{fmt_date(w.local(other.sold_at))}), which rule 6 picks first.", **base))
            continue
        if p.id not in considered:
            continue  # charged before this package existed: not its business
        reason = considered[p.id]
        # The visit used a session already (another of its lines, or the sale's first session):
        # applying a package to this line too would count it twice.
        counted = bool(line.appointment_id and w.live_uses_by_visit.get(line.appointment_id))
        if reason == SERVICE_NOT_IN_PACKAGE:
            # An add-on beside the visit's counted service is no wrong service.
            if (w.in_window(p, day) and not p.cancelled_at and not counted
                    and looks_like_wrong_service(w, p, line)):
                target = nearest_eligible(w, p, line.service_id)
                nearest = f" (the nearest is {w.service(target)})" if len(p.eligible_service_ids) > 1 else ""
                applicable = w.could_cover_now(p, target, day) and not w.on_deleted_visit(line)
                refund = applicable and w.paid_for(line)
                findings.append(Finding(
                    SERVICE_NOT_IN_PACKAGE, "warning",
                    f"{what}; {p.name} covers only "
                    f"{', '.join(sorted(w.service(s) for s in p.eligible_service_ids))}{nearest}."
                    f"{w.refund_first(line) if refund else ''}",
                    fix={"action": "apply_to_line", "params": {"line_id": line.id, "service_id": target}}
                    if applicable and not refund else None, **base))
        elif reason == PACKAGE_NOT_PAID and sale is not None:
            paid_then = sale.paid_by(w.invoices[line.invoice_id].issued_at)
            if p.activated_at:
                when_paid = f"it was paid in full on {fmt_date(w.local(p.activated_at))}"
            elif sale.voided_at:  # nothing is due on a void invoice: the sale was undone
                when_paid = f"its sale {sale.number} was voided on {fmt_date(w.local(sale.voided_at))}"
            else:
                when_paid = f"it is still not paid in full ({w.money(sale.total - sale.paid)} due)"
            applicable = w.could_cover_now(p, line.service_id, day) and not w.on_deleted_visit(line) and not counted
            refund = applicable and w.paid_for(line)
            findings.append(Finding(
                PACKAGE_NOT_PAID, "warning",
                f"{what} while {p.name} was not fully paid ({w.money(paid_then)} of {w.money(sale.total)} paid "
                f"on {sale.number}); {when_paid}.{w.refund_first(line) if refund else ''}",
                fix={"action": "apply_to_line", "params": {"line_id": line.id}} if applicable and not refund else None,
                **base))
        elif reason == CHARGED_BEFORE_PURCHASE:
            findings.append(Finding(
                CHARGED_BEFORE_PURCHASE, "info",
                f"{what} on {w.invoices[line.invoice_id].number}, dated before {p.name} was sold on "
                f"{fmt_date(w.local(p.sold_at))}; a package never covers earlier visits.", **base))
        elif reason == PACKAGE_EXHAUSTED:
            findings.append(Finding(PACKAGE_EXHAUSTED, "info",
                                    f"{what} after all {p.sessions_total} sessions of {p.name} were used.", **base))
        elif reason == PACKAGE_EXPIRED:
            end = w.last_valid_day(p)
            if end is not None and day <= end:
                # The expiry was extended after this charge (rule 12: not reaching back).
                when = (f" (its expiry was later extended to {fmt_date(end)}, which covers only visits "
                        "charged from then on)")
            else:
                when = f" on {fmt_date(end)}" if end else ""
            findings.append(Finding(PACKAGE_EXPIRED, "info",
                                    f"{what} after {p.name} expired{when}.", **base))
        elif reason == PACKAGE_CANCELLED:
            findings.append(Finding(PACKAGE_CANCELLED, "info",
                                    f"{what} after {p.name} was cancelled"
                                    f"{' on ' + fmt_date(w.local(p.cancelled_at)) if p.cancelled_at else ''}.",
                                    **base))
    return findings


def visit_finding(w: Walk, visit: VisitFact) -> Finding | None:
    """A missed step on one visit, if any (not checked in, No Charges, not invoiced)."""
    if visit.deleted:
        return None  # reported from its tombstone
    if visit.status not in ("booked", "attended"):
        return None
    day = w.local(visit.starts_at)
    name = w.service(visit.service_id)
    base: dict[str, Any] = dict(date=day, appointment_id=visit.id)
    if visit.status == "booked" and visit.starts_at < w.h.now and day < w.today:
        return Finding(NOT_CHECKED_IN, "warning",
                       f"The {name} visit on {fmt_date(day)} is still booked: was the patient seen but never "
                       "checked in?", fix={"action": "check_in_and_charge", "params": {"appointment_id": visit.id}},
                       **base)
    if visit.status != "attended":
        return None
    if visit.no_charges:
        if w.live_uses_by_visit.get(visit.id):
            return None  # counted all the same: the sale's first session was used for it
        return Finding(NO_CHARGES, "warning",
                       f"The {name} visit on {fmt_date(day)} was checked in with No Charges, so no session "
                       "was used.", fix={"action": "check_in_and_charge", "params": {"appointment_id": visit.id}},
                       **base)
    has_line = any(ln.kind in ("service", "first_session") for ln in w.live_lines_by_visit.get(visit.id, []))
    if not has_line and not w.live_uses_by_visit.get(visit.id):
        return Finding(NOT_INVOICED, "warning",
                       f"The {name} visit on {fmt_date(day)} was checked in but no service was charged on any "
                       "invoice.", fix={"action": "check_in_and_charge", "params": {"appointment_id": visit.id}},
                       **base)
    return None


def tombstone_finding(w: Walk, t) -> Finding | None:
    if t.kind != "appointment":
        return None
    restored = t.appointment_id in w.visits and not w.visits[t.appointment_id].deleted
    if restored or (t.appointment_id and w.latest_tombstone.get(t.appointment_id) != t.id):
        return None
    content = t.content or {}
    starts = content.get("starts_at")
    try:
        start = dt.datetime.fromisoformat(starts) if starts else None
    except ValueError:
        start = None
    if not was_possibly_a_visit(w, content.get("status"), start):
        return None  # a cancelled, no-show or future booking: no visit is missing (the timeline keeps it)
    day = w.local(start) if start else w.local(t.removed_at)
    name = content.get("service_name") or w.service(content.get("service"))
    reason = f" (reason: {t.reason})" if t.reason and w.quote_staff_text else ""
    return Finding(APPOINTMENT_DELETED, "warning",
                   f"The {name} visit on {fmt_date(day)} was permanently deleted on "
                   f"{fmt_date(w.local(t.removed_at))}{reason}.",
                   date=day, appointment_id=t.appointment_id, tombstone_id=t.id,
                   fix={"action": "recreate_from_tombstone", "params": {"tombstone_id": t.id}})


def was_possibly_a_visit(w: Walk, status: str | None, start: dt.datetime | None) -> bool:
    """Whether a deleted appointment may have been a visit: attended, or booked for a time
    already past (seen but never checked in?). Cancelled and no-show ones were not."""
    if status in ("cancelled", "no_show"):
        return False
    if status == "booked" and start is not None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
        return start < w.h.now
    return True


def tombstone_service(t) -> int | None:
    value = (t.content or {}).get("service")
    return value if isinstance(value, int) else None


def first_session_findings(w: Walk, p: PackageFact) -> list[Finding]:
    if p.use_first_session:
        if p.activated_at is None:
            return []  # the payment that activates it uses it (rule 5)
        if any(w.is_live(ln) for ln in w.first_session_lines.get(p.id, ())):
            return []  # the sale's own line holds it
        # Ticked, but its line was removed (given back, or moved to a visit's own charge):
        # a visit of the sale day that nothing counts is still the one it was for.
    sale = w.invoices.get(p.sale_invoice_id)
    if sale is not None and sale.voided_at is not None:
        return []  # the sale itself was undone: it had no first session to use
    sale_day = w.local(p.sold_at)
    findings = []
    for visit in w.visits_by_day.get(sale_day, []):
        if visit.deleted or visit.status not in ("attended",):
            continue
        if visit.service_id not in p.eligible_service_ids or w.visit_counted_by(visit.id):
            continue
        lines = [ln for ln in w.live_lines_by_visit.get(visit.id, []) if ln.kind == "service" and ln.covered_by is None]
        fix: dict[str, Any] = ({"action": "use_first_session", "params": {"line_id": lines[0].id}} if lines
               else {"action": "check_in_and_charge", "params": {"appointment_id": visit.id}})
        if lines and lines[0].service_id not in p.eligible_service_ids:
            # Booked as an eligible service but charged another: the fix charges the booked one.
            fix["params"]["service_id"] = visit.service_id
        if lines and w.line_date(lines[0]) != sale_day:
            fix["action"] = "apply_to_line"  # charged on an invoice of another day: not the sale day's line
        if lines and not w.could_cover_now(p, fix["params"].get("service_id", lines[0].service_id),
                                           w.line_date(lines[0])):
            # A closed, unpaid or used-up package covers nothing (rules 1, 6, 11), nor does any
            # package a line dated before its sale (rule 4): no fix can use it.
            fix = {}
        refund = bool(fix) and bool(lines) and w.paid_for(lines[0])
        if refund:
            fix = {}
        findings.append(Finding(
            FIRST_SESSION_NOT_USED, "warning",
            f"{p.name} was sold on {fmt_date(sale_day)} "
            f"{'with “Use first session”, but that session was given back' if p.use_first_session else 'without “Use first session”'}"
            f", and the patient's {w.service(visit.service_id)} visit that day was not counted."
            f"{w.refund_first(lines[0]) if refund else ''}",
            date=sale_day, appointment_id=visit.id, line_id=lines[0].id if lines else None,
            invoice_id=lines[0].invoice_id if lines else None, fix=fix or None, patient_package_id=p.id))
    return findings


def double_use_findings(w: Walk, p: PackageFact) -> list[Finding]:
    uses = w.live_uses_by_package.get(p.id, [])
    findings = []
    by_visit: dict[int, list[EntryFact]] = defaultdict(list)
    by_day: dict[dt.date, list[EntryFact]] = defaultdict(list)
    for e in uses:
        line = w.lines.get(e.invoice_line_id or -1)
        visit_id = e.appointment_id or (line.appointment_id if line else None)
        if visit_id:
            by_visit[visit_id].append(e)
        # A use belongs to its visit's day: not to the day it was recorded (no-shows marked
        # together are not one day's double use), nor to its invoice's date (a visit invoiced
        # the next day is not a second visit that day). A use of no visit (a first session at
        # the sale) belongs to its line's date.
        visit = w.visits.get(visit_id or -1)
        day = w.local(visit.starts_at) if visit else w.line_date(line) if line else w.local(e.at)
        by_day[day].append(e)
    reported_days = set()
    for visit_id, own in by_visit.items():
        # One visit counted twice, by this package alone or by this one and another.
        es = sorted(w.live_uses_by_visit.get(visit_id, own), key=lambda e: e.id)
        if len(es) > 1:
            visit = w.visits.get(visit_id)
            day = w.local(visit.starts_at) if visit else w.local(es[0].at)
            reported_days.add(day)
            others = sorted({f"{o.name} (sold {fmt_date(w.local(o.sold_at))})" for e in es
                             if e.patient_package_id != p.id and (o := w.packages.get(e.patient_package_id))})
            if len(own) == len(es):
                what = f"{len(es)} sessions of {p.name} were used"
            else:
                what = (f"{len(es)} sessions were used ({len(own)} of {p.name}, "
                        f"{len(es) - len(own)} of {', '.join(others) or 'another package'})")
            line = duplicate_charge(w, es)
            findings.append(Finding(POSSIBLE_DOUBLE_USE, "warning",
                                    f"{what} for the one visit on {fmt_date(day)}; "
                                    "remove the duplicate charge.", date=day, appointment_id=visit_id,
                                    line_id=line.id if line else None, invoice_id=line.invoice_id if line else None,
                                    patient_package_id=p.id))
    for day, es in sorted(by_day.items()):
        if len(es) > 1 and day not in reported_days:
            line = duplicate_charge(w, es)
            findings.append(Finding(POSSIBLE_DOUBLE_USE, "warning",
                                    f"{len(es)} sessions of {p.name} were used on {fmt_date(day)}; check whether "
                                    "one visit was charged twice.", date=day, line_id=line.id if line else None,
                                    invoice_id=line.invoice_id if line else None, patient_package_id=p.id))
    return findings


def duplicate_charge(w: Walk, uses: list[EntryFact]) -> LineFact | None:
    """The charge a double use asks staff to remove (the finding's line and invoice): one no
    visit owns when there is one, such as a first session used at a sale that named no visit,
    for the visit keeps its own charge (removing that instead leaves the visit NOT_INVOICED,
    whose fix charges it again); else the latest. None when no use has a line."""
    lines = [(e, w.lines[e.invoice_line_id]) for e in uses if e.invoice_line_id in w.lines]
    unowned = [ln for e, ln in lines if e.appointment_id is None and ln.appointment_id is None]
    owned: list[LineFact | None] = [*(unowned or [ln for _, ln in lines])]
    return (owned or [None])[-1]


def record_days(w: Walk) -> list[dt.date]:
    days = [w.local(v.starts_at) for v in w.h.visits]
    days += [w.local(inv.issued_at) for inv in w.h.invoices]
    days += [w.local(pay.received_at) for inv in w.h.invoices for pay in inv.payments]
    days += [w.local(t.removed_at) for t in w.h.tombstones]
    days += [w.local(p.sold_at) for p in w.h.packages]
    # An owner's adjustment is a record too ("paper card: 3 visits"); uses and reversals are
    # dated by the visit or invoice they belong to, already above.
    days += [w.local(e.at) for e in w.h.entries if e.kind == "adjustment"]
    return sorted(set(days))


def schedule_gaps(w: Walk) -> list[tuple[dt.date, dt.date]]:
    """Gaps of ≥ 2.5× the median interval and ≥ 14 days between attended visits, with no
    record of any kind inside."""
    days = sorted({w.local(v.starts_at) for v in w.h.visits if v.status == "attended" and not v.deleted})
    if len(days) < 3:
        return []
    intervals = [(b - a).days for a, b in zip(days, days[1:], strict=False)]
    median = statistics.median(intervals)
    threshold = max(2.5 * median, 14)
    records = record_days(w)
    gaps = []
    for a, b in zip(days, days[1:], strict=False):
        if (b - a).days >= threshold and not any(a < d < b for d in records):
            gaps.append((a, b))
    return gaps


def gap_finding(w: Walk, start: dt.date, end: dt.date, p: PackageFact | None, disputed: bool) -> Finding:
    return Finding(SCHEDULE_GAP, "warning" if disputed else "info",
                   f"No visit or record of any kind between {fmt_date(start)} and {fmt_date(end)} "
                   f"({(end - start).days} days), far longer than this patient's usual rhythm: a visit may have "
                   "been deleted before Tally kept tombstones, or imported data may be missing.",
                   date=start, until=end, patient_package_id=p.id if p else None)


# ---------------------------------------------------------------- assembling


def summary_of(w: Walk, p: PackageFact, expected_used: int | None) -> dict:
    sale: InvoiceFact | None = w.invoices.get(p.sale_invoice_id)
    paid = sale.paid if sale else Decimal("0.00")
    balance = (sale.total - sale.paid) if sale else Decimal("0.00")
    return {
        "id": p.id, "patient_id": w.h.patient_id, "package_id": p.package_id, "name": p.name,
        "sessions_total": p.sessions_total, "sessions_used": p.sessions_used,
        "sessions_remaining": p.sessions_total - p.sessions_used, "status": w.status(p),
        "eligible_service_ids": sorted(p.eligible_service_ids), "sale_invoice_id": p.sale_invoice_id,
        "sold_at": p.sold_at, "activated_at": p.activated_at, "expires_at": p.expires_at,
        "paid": paid, "balance": balance, "expected_used": expected_used,
        "difference": (expected_used - p.sessions_used) if expected_used is not None else None,
        # For the support export, which says more than the API's summary.
        "price": p.price, "use_first_session": p.use_first_session, "cancelled_at": p.cancelled_at,
    }


def visit_reason(w: Walk, visit: VisitFact, p: PackageFact | None) -> tuple[bool, str | None]:
    """(counted by this package, reason when not)."""
    counted_by, reason, line = w.visit_reason_for_all(visit)
    if counted_by:
        return (True, None) if p is None or p.id in counted_by else (False, COVERED_BY_OTHER_PACKAGE)
    if reason is not None or line is None:
        return False, reason
    if p is not None:
        considered = w.considered_by(line)
        if p.id in considered:
            return False, considered[p.id]
        return False, CHARGED_BEFORE_PURCHASE if w.line_date(line) < w.local(p.sold_at) else "NOT_CONSIDERED"
    return False, line.not_covered_reason or "NO_PACKAGE"


def timeline_of(w: Walk, p: PackageFact | None) -> list[dict]:
    """Every record, oldest first; visits say whether this package counted them and why not.
    Events other than visits are shared by the packages' timelines: treat them as read-only."""
    if w.timeline is None:
        w.timeline = shared_timeline(w)
    events = []
    for event in w.timeline:
        if event["kind"] == "visit":
            counted, reason = visit_reason(w, w.visits[event["appointment_id"]], p)
            event = event | {"counted": counted, "reason": reason}
        elif event["kind"] == "ledger" and p is not None and event["patient_package_id"] != p.id:
            continue
        events.append(event)
    return events


def shared_timeline(w: Walk) -> list[dict]:
    events: list[dict] = []
    for v in w.h.visits:
        events.append({"kind": "visit", "at": v.starts_at, "appointment_id": v.id, "service_id": v.service_id,
                       "service": w.service(v.service_id), "status": "deleted" if v.deleted else v.status,
                       "no_charges": v.no_charges, "counted": None, "reason": None})
    for t in w.h.tombstones:
        events.append({"kind": "tombstone", "at": t.removed_at, "tombstone_id": t.id, "of": t.kind,
                       "appointment_id": t.appointment_id, "invoice_line_id": t.invoice_line_id, "reason": w.staff_text(t.reason),
                       "by": t.removed_by})
    for inv in w.h.invoices:
        events.append({"kind": "invoice", "at": inv.issued_at, "invoice_id": inv.id, "number": inv.number,
                       "status": "void" if inv.voided_at else None, "total": inv.total, "paid": inv.paid})
        for ln in inv.lines:
            events.append({"kind": "line", "at": ln.created_at, "invoice_id": inv.id, "line_id": ln.id,
                           "line_kind": ln.kind, "description": ln.description, "amount": ln.amount,
                           "appointment_id": ln.appointment_id, "covered_by": ln.covered_by,
                           "session_number": ln.session_number, "not_covered_reason": ln.not_covered_reason,
                           "live": w.is_live(ln)})
        for pay in inv.payments:
            events.append({"kind": "payment", "at": pay.received_at, "invoice_id": inv.id, "payment_id": pay.id,
                           "amount": pay.amount, "method": pay.method, "reason": w.staff_text(pay.reason)})
    for e in w.h.entries:
        events.append({"kind": "ledger", "at": e.at, "entry_id": e.id, "patient_package_id": e.patient_package_id,
                       "entry_kind": e.kind, "change": e.change, "used_after": e.used_after,
                       "invoice_line_id": e.invoice_line_id, "appointment_id": e.appointment_id,
                       "reverses": e.reverses_id, "reason": w.staff_text(e.reason)})
    order = {"visit": 0, "invoice": 1, "line": 2, "ledger": 3, "payment": 4, "tombstone": 5}
    events.sort(key=lambda ev: (ev["at"], order[ev["kind"]]))
    return events


def sort_findings(findings: list[Finding], difference: int | None) -> list[Finding]:
    def accounts(f: Finding) -> int:
        if difference is None or difference == 0:
            return 0
        relevant = EXPLAINS_FEWER_USED if difference > 0 else EXPLAINS_MORE_USED
        return 0 if f.code in relevant else 1

    return sorted(findings, key=lambda f: (accounts(f), SEVERITY_RANK[f.severity], f.date, f.code))


def explain(history: History, *, expected_used: dict[int, int] | None = None, timeline: bool = True,
            quote_staff_text: bool = True) -> tuple[dict[int, Investigation], list[Finding]]:
    """Every package's investigation, and the visit-level findings that belong to no package.
    The clinic audit needs no timelines (timeline=False); the support export without names
    quotes no reason staff typed (quote_staff_text=False)."""
    w = Walk(history, quote_staff_text=quote_staff_text)
    expected_used = expected_used or {}
    per_package: dict[int, list[Finding]] = {p.id: [] for p in history.packages}
    orphans: list[Finding] = []

    def attach(finding: Finding, package: PackageFact | None) -> None:
        if package is None:
            finding.patient_package_id = None
            orphans.append(finding)
        else:
            finding.patient_package_id = package.id
            per_package[package.id].append(finding)

    for p in history.packages:
        per_package[p.id] += ledger_findings(w, p)
        per_package[p.id] += line_findings(w, p)
        per_package[p.id] += first_session_findings(w, p)
        per_package[p.id] += double_use_findings(w, p)
    first_session_visits = {f.appointment_id for fs in per_package.values() for f in fs
                            if f.code == FIRST_SESSION_NOT_USED}
    for visit in history.visits:
        finding = visit_finding(w, visit)
        if finding is not None and visit.id not in first_session_visits:
            attach(finding, w.owner_package_for_visit(visit))
    for t in history.tombstones:
        finding = tombstone_finding(w, t)
        if finding is None:
            continue
        service_id = tombstone_service(t)
        ghost = VisitFact(id=t.appointment_id or 0, service_id=service_id or -1, practitioner_id=None,
                          starts_at=dt.datetime.combine(finding.date, dt.time(12), tzinfo=w.tz), status="attended",
                          no_charges=False, deleted=True)
        attach(finding, w.owner_package_for_visit(ghost))
    for start, end in schedule_gaps(w):
        owners = [p for p in history.packages
                  if w.local(p.sold_at) <= end and ((last := w.last_valid_day(p)) is None or last >= start)]
        if not owners:
            orphans.append(gap_finding(w, start, end, None, False))
        for p in owners:
            expected = expected_used.get(p.id)
            per_package[p.id].append(gap_finding(w, start, end, p, expected is not None and expected > p.sessions_used))

    investigations = {}
    for p in history.packages:
        summary = summary_of(w, p, expected_used.get(p.id))
        investigations[p.id] = Investigation(
            summary=summary,
            findings=sort_findings(per_package[p.id], summary["difference"]),
            timeline=timeline_of(w, p) if timeline else [],
        )
    return investigations, sort_findings(orphans, None)
