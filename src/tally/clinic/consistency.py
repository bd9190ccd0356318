"""Structural invariants every committed transaction keeps: `tally verify`.

Not the investigator's business discrepancies (a visit nobody charged, a package used
past its expiry): those are facts about the clinic's history. These are facts about
the database itself; any of them failing means a write was torn or a bug wrote half
of something. Used by `tally verify`, the fault tests and bench/load.py.

  ledger      every package replays cleanly from its entries (ledger.verify)
  coverage    a live covered line has one live use, in the package it names; a
              removed line, or a line on a void invoice, has none
  invoices    an invoice that is not void has at least one line row (check-ins and
              sales write the invoice and its line together)
  check-ins   an attended visit that was charged has a line row pointing at it
  packages    rule 1 both ways: a package not cancelled was activated exactly when its
              sale invoice has nothing left to pay (a refund or a charge that would unpay
              a live package's sale is refused; a payment or a lower total that pays it
              off activates it)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Exists, OuterRef, Sum

from .ledger import verify as verify_ledger
from .models import Appointment, Invoice, InvoiceLine, PackageLedgerEntry, PatientPackage, Payment
from .models.ledger import EntryKind
from .models.scheduling import AppointmentStatus


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.message}"


def live_uses_by_line() -> dict[int, list[tuple[int, int]]]:
    """invoice_line_id -> [(entry id, package id)] of uses not reversed."""
    reversed_ids = set(
        PackageLedgerEntry.objects.filter(kind=EntryKind.REVERSAL).values_list("reverses_id", flat=True)
    )
    uses: dict[int, list[tuple[int, int]]] = {}
    rows = PackageLedgerEntry.objects.filter(kind=EntryKind.USE, invoice_line__isnull=False).values_list(
        "pk", "invoice_line_id", "patient_package_id"
    )
    for pk, line_id, package_id in rows.iterator(chunk_size=5000):
        if pk not in reversed_ids:
            uses.setdefault(line_id, []).append((pk, package_id))
    return uses


def check_coverage() -> list[Problem]:
    problems: list[Problem] = []
    uses = live_uses_by_line()
    lines = InvoiceLine.objects.values_list("pk", "covered_by_id", "removed_at", "invoice__voided_at")
    seen: set[int] = set()
    for pk, covered_by, removed_at, voided_at in lines.iterator(chunk_size=5000):
        seen.add(pk)
        live_line = removed_at is None and voided_at is None
        line_uses = uses.get(pk, [])
        if live_line and covered_by is not None:
            if not line_uses:
                problems.append(Problem("coverage", f"line {pk}",
                                        f"covered by package {covered_by} but no live use of a session"))
            elif any(package_id != covered_by for _, package_id in line_uses):
                problems.append(Problem("coverage", f"line {pk}",
                                        f"covered by package {covered_by} but its use is in another package"))
        elif live_line and line_uses:
            problems.append(Problem("coverage", f"line {pk}", "uses a session but is not marked covered"))
        elif not live_line and line_uses:
            state = "removed" if removed_at is not None else "on a void invoice"
            problems.append(Problem("coverage", f"line {pk}", f"is {state} but still uses a session"))
    for line_id in sorted(set(uses) - seen):
        problems.append(Problem("coverage", f"line {line_id}", "a live use points at a line that does not exist"))
    return problems


def check_invoices() -> list[Problem]:
    empty = (
        Invoice.objects.filter(voided_at__isnull=True)
        .annotate(line_rows=Count("lines"))
        .filter(line_rows=0)
        .values_list("pk", flat=True)
    )
    return [Problem("invoices", f"invoice {pk}", "is not void and has no lines at all (half-written?)")
            for pk in empty]


def check_check_ins() -> list[Problem]:
    uncharged = (
        Appointment.objects.filter(status=AppointmentStatus.ATTENDED, no_charges=False)
        .exclude(Exists(InvoiceLine.objects.filter(appointment=OuterRef("pk"))))
        .values_list("pk", flat=True)
    )
    return [Problem("check-ins", f"appointment {pk}", "is checked in with charges but no line was ever written")
            for pk in uncharged]


@dataclass(frozen=True)
class SaleState:
    patient_package_id: int
    sale_invoice_id: int
    activated: bool
    balance: Decimal


def sale_states() -> list[SaleState]:
    """Every package not cancelled, with its sale invoice's balance summed in the database
    (three queries, whatever the number of packages)."""
    packages = PatientPackage.objects.filter(cancelled_at__isnull=True)
    sales = packages.values("sale_invoice_id")

    def sums(rows, field: str) -> dict[int, Decimal]:
        return dict(rows.filter(invoice_id__in=sales).values("invoice_id")
                    .annotate(sum=Sum(field)).values_list("invoice_id", "sum"))

    totals = sums(InvoiceLine.objects.filter(removed_at__isnull=True), "amount")
    paid = sums(Payment.objects.all(), "amount")
    zero = Decimal("0.00")
    return [SaleState(pk, invoice_id, activated_at is not None,
                      totals.get(invoice_id, zero) - paid.get(invoice_id, zero))
            for pk, invoice_id, activated_at in packages.values_list("pk", "sale_invoice_id", "activated_at")]


def pending_on_paid_off_sales() -> list[SaleState]:
    """The packages left pending on a sale with nothing left to pay: what `tally activatepaid`
    activates (a release before the activation on a lower total could leave them)."""
    return [sale for sale in sale_states() if not sale.activated and sale.balance <= 0]


def check_activation() -> list[Problem]:
    """Rule 1 both ways: activated exactly when the sale invoice has nothing left to pay."""
    problems = []
    for sale in sale_states():
        number = Invoice(pk=sale.sale_invoice_id).number
        subject = f"patient package {sale.patient_package_id}"
        if sale.activated and sale.balance > 0:
            problems.append(Problem("packages", subject,
                                    f"it is usable, but its sale {number} has a balance of {sale.balance:.2f}"))
        elif not sale.activated and sale.balance <= 0:
            problems.append(Problem("packages", subject,
                                    f"its sale {number} is paid in full but the package was never activated "
                                    "(`tally activatepaid` activates it)"))
    return problems


def verify_database() -> list[Problem]:
    problems = [Problem("ledger", f"patient package {p.patient_package_id}", p.message) for p in verify_ledger()]
    problems += check_coverage()
    problems += check_invoices()
    problems += check_check_ins()
    problems += check_activation()
    return problems
