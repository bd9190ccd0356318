#!/usr/bin/env python
"""Build a synthetic clinic into the configured database (TALLY_DATABASE_URL), with
discrepancies of every investigator finding injected at known places, and write the
ground truth: for every package, the finding codes injected (empty = clean).

    python bench/generate.py --patients 10000 --packages-per-patient 2 --visits 400000 \\
        --years 3 --seed 1 --truth truth.json
    python bench/generate.py --small --truth truth.json

Rows are written with bulk_create, computing in Python what the do_* actions would have
written (invoices dated at the visit's start, lines whose coverage rules.decide_coverage
decides, the coverage_decision record, activation, first sessions, tombstones). Ledger
entries go through tally.clinic.ledger.import_entries, the ledger's one writer.

Clean packages are genuinely clean: a regular rhythm, paid before use, the right service,
checked in, invoiced. Each injected package has one primary cause.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
import zoneinfo
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import django
from django.conf import settings

if not settings.configured:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tally.settings")
    if not os.environ.get("TALLY_DEBUG"):
        os.environ.setdefault("TALLY_SECRET_KEY", "bench-only-not-a-secret")
    django.setup()

from django.db import connection, transaction  # noqa: E402

from tally.clinic import rules  # noqa: E402
from tally.clinic.ledger import import_entries  # noqa: E402
from tally.clinic.models import (  # noqa: E402
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    Package,
    Patient,
    PatientPackage,
    Payment,
    Service,
    Tombstone,
)

CODES = [
    "FIRST_SESSION_NOT_USED", "NOT_CHECKED_IN", "NO_CHARGES", "NOT_INVOICED", "APPOINTMENT_DELETED",
    "SCHEDULE_GAP", "SERVICE_NOT_IN_PACKAGE", "PACKAGE_NOT_PAID", "CHARGED_BEFORE_PURCHASE",
    "COVERED_BY_OTHER_PACKAGE", "PACKAGE_EXHAUSTED", "PACKAGE_EXPIRED", "PACKAGE_CANCELLED",
    "POSSIBLE_DOUBLE_USE", "LEDGER_MISMATCH",
]
# A slot inside a package's run of visits that the injection spoils.
MIDDLE_CODES = {"NOT_CHECKED_IN", "NO_CHARGES", "NOT_INVOICED", "APPOINTMENT_DELETED", "SERVICE_NOT_IN_PACKAGE",
                "POSSIBLE_DOUBLE_USE"}
TIME_ZONE = "America/New_York"
ZERO = Decimal("0.00")

# (family, [(service, minutes, price) primary first, then a longer variant], (package, price, sessions, expires))
FAMILIES = [
    ("Acupuncture", [("Acupuncture 60 min", 60, "95.00"), ("Acupuncture 90 min", 90, "130.00")],
     ("10 x Acupuncture 60", "800.00", 10, False)),
    ("Massage", [("Massage 60 min", 60, "80.00"), ("Massage 90 min", 90, "110.00")],
     ("5 x Massage 60", "360.00", 5, True)),
    ("Physiotherapy", [("Physiotherapy 45 min", 45, "70.00"), ("Physiotherapy 60 min", 60, "90.00")],
     ("8 x Physiotherapy 45", "480.00", 8, False)),
    ("Chiropractic", [("Chiropractic 30 min", 30, "60.00"), ("Chiropractic 45 min", 45, "80.00")],
     ("6 x Chiropractic 30", "300.00", 6, True)),
]
FIRST_NAMES = ["Maria", "Ana", "John", "Wei", "Fatima", "Olga", "Kofi", "Lena", "Ravi", "Sofia", "Tom", "Yuki"]
LAST_NAMES = ["Lopez", "Silva", "Smith", "Chen", "Khan", "Ivanova", "Mensah", "Novak", "Patel", "Rossi", "Berg"]


@dataclass
class Config:
    patients: int = 10_000
    packages_per_patient: int = 2
    visits: int = 400_000
    years: int = 3
    seed: int = 1
    fraction: float = 0.3
    long_patient_visits: int = 1000
    chunk: int = 250


SMALL = Config(patients=40, packages_per_patient=2, visits=1200, years=2, seed=7, fraction=0.6,
               long_patient_visits=0, chunk=100)


# ------------------------------------------------------------------ catalog


@dataclass
class Family:
    name: str
    primary: Service
    variant: Service
    template: Package


def build_catalog(interval: int) -> list[Family]:
    families = []
    for name, services, (pname, price, sessions, expires) in FAMILIES:
        made = [Service.objects.create(name=s, duration_minutes=m, price=Decimal(p)) for s, m, p in services]
        # Validity long enough for a clean run of visits at the clinic's rhythm.
        valid_days = (sessions + 4) * (interval + 2) + 14 if expires else None
        template = Package.objects.create(name=pname, price=Decimal(price), sessions=sessions, valid_days=valid_days)
        template.services.set([made[0]])
        families.append(Family(name, made[0], made[1], template))
    return families


# ------------------------------------------------------------------ one patient, simulated


@dataclass
class Held:
    """One patient package as the simulation sees it: the row to write plus rule state."""

    obj: PatientPackage
    tmp_id: int
    family: Family
    used: int = 0
    entries: list[dict] = field(default_factory=list)

    def facts(self, tz: dt.tzinfo) -> rules.PackageFacts:
        p = self.obj
        return rules.PackageFacts(
            id=self.tmp_id, eligible_service_ids=frozenset({self.family.primary.pk}),
            sold_on=rules.clinic_date(p.sold_at, tz), sold_at=p.sold_at, activated=p.activated_at is not None,
            cancelled=p.cancelled_at is not None, sessions_remaining=p.sessions_total - self.used,
            last_valid_day=rules.clinic_date(p.expires_at, tz) if p.expires_at else None,
        )


class Rows:
    """Everything one chunk of patients writes, in insert order."""

    def __init__(self):
        self.patients: list[Patient] = []
        self.appointments: list[Appointment] = []
        self.invoices: list[Invoice] = []
        self.packages: list[Held] = []
        self.lines: list[InvoiceLine] = []
        self.payments: list[Payment] = []
        self.tombstones: list[tuple[Tombstone, object]] = []
        self.mismatches: list[Held] = []


class PatientSim:
    """What the do_* actions would have written for one patient, in time order."""

    def __init__(self, rows: Rows, patient: Patient, tz: dt.tzinfo, counter: list[int]):
        self.rows, self.patient, self.tz, self.counter = rows, patient, tz, counter
        self.held: list[Held] = []

    def at(self, day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=self.tz)

    # -- sales and payments
    def sell(self, family: Family, when: dt.datetime, *, pay: Decimal | None, use_first_session: bool = False,
             first_appointment: Appointment | None = None) -> Held:
        t = family.template
        invoice = self.invoice(when)
        pp = PatientPackage(patient=self.patient, package=t, name=t.name, price=t.price, sessions_total=t.sessions,
                            valid_days=t.valid_days, sale_invoice=invoice, sold_at=when,
                            use_first_session=use_first_session, first_session_appointment=first_appointment)
        self.counter[0] += 1
        held = Held(pp, self.counter[0], family)
        self.held.append(held)
        self.rows.packages.append(held)
        self.line(invoice, "package_sale", when, package=t, patient_package=pp, amount=t.price,
                  description=f"{t.name} ({t.sessions} sessions)")
        if use_first_session:
            held.first_line = self.line(invoice, "first_session", when, package=t, patient_package=pp, amount=ZERO,
                                        service=first_appointment.service if first_appointment else None,
                                        appointment=first_appointment, description=f"First session of {t.name}")
        if pay:
            self.pay(invoice, pay, when)
            if pay == t.price:
                self.activate(held, when)
        return held

    def pay(self, invoice: Invoice, amount: Decimal, when: dt.datetime) -> None:
        self.rows.payments.append(Payment(invoice=invoice, amount=amount, method="card", received_at=when,
                                         created_at=when))

    def activate(self, held: Held, when: dt.datetime) -> None:
        """Rule 1 and rule 5: the completing payment activates, and uses a ticked first session."""
        pp = held.obj
        pp.activated_at = when
        day = rules.last_valid_day(rules.clinic_date(when, self.tz), pp.valid_days)
        pp.expires_at = rules.end_of_day(day, self.tz) if day else None
        if pp.use_first_session:
            self.cover(held, held.first_line, when, reason="first session, used at the sale")

    def cancel(self, held: Held, when: dt.datetime) -> None:
        held.obj.cancelled_at = when
        held.obj.cancel_reason = "patient moved away"

    # -- visits and charges
    def book(self, service: Service, starts: dt.datetime) -> Appointment:
        a = Appointment(patient=self.patient, service=service, starts_at=starts,
                        ends_at=starts + dt.timedelta(minutes=service.duration_minutes), status="booked",
                        created_at=starts - dt.timedelta(days=7))
        self.rows.appointments.append(a)
        return a

    def visit(self, service: Service, starts: dt.datetime, *, charge: Service | None = None,
              no_charges: bool = False) -> tuple[Appointment, Invoice | None, InvoiceLine | None]:
        a = self.book(service, starts)
        a.status, a.checked_in_at, a.no_charges = "attended", starts, no_charges
        if no_charges:
            return a, None, None
        invoice = self.invoice(starts)
        line = self.charge(invoice, charge or service, starts, appointment=a)
        if line.amount:
            self.pay(invoice, line.amount, starts + dt.timedelta(hours=1))
        return a, invoice, line

    def invoice(self, issued: dt.datetime, created: dt.datetime | None = None) -> Invoice:
        inv = Invoice(patient=self.patient, issued_at=issued, created_at=created or issued)
        self.rows.invoices.append(inv)
        return inv

    def line(self, invoice: Invoice, kind: str, when: dt.datetime, *, amount: Decimal, description: str,
             **fields) -> InvoiceLine:
        ln = InvoiceLine(invoice=invoice, kind=kind, description=description, list_price=amount, amount=amount,
                         created_at=when, **fields)
        self.rows.lines.append(ln)
        return ln

    def charge(self, invoice: Invoice, service: Service, when: dt.datetime, *,
               appointment: Appointment | None = None) -> InvoiceLine:
        """coverage.charge_service: rules 1-6 decide on the invoice's date, the line records why."""
        invoice_date = rules.clinic_date(invoice.issued_at, self.tz)
        decision = rules.decide_coverage(service.pk, invoice_date, [h.facts(self.tz) for h in self.held])
        ln = self.line(invoice, "service", when, service=service, appointment=appointment, amount=service.price,
                       description=service.name, not_covered_reason=decision.reason)
        ln.list_price = service.price
        ln._decision = (decision, invoice_date.isoformat(), when.isoformat())
        if decision.covered_by is not None:
            held = next(h for h in self.held if h.tmp_id == decision.covered_by)
            self.cover(held, ln, when)
        return ln

    def cover(self, held: Held, line: InvoiceLine, when: dt.datetime, reason: str = "") -> None:
        held.used += 1
        held.entries.append({"kind": "use", "change": -1, "at": when, "line": line,
                             "appointment": line.appointment, "reason": reason})
        line.covered_by, line.session_number, line.amount, line.not_covered_reason = held.obj, held.used, ZERO, None
        line.sessions_left = held.obj.sessions_total - held.used

    def remove_line(self, line: InvoiceLine, when: dt.datetime, reason: str) -> None:
        """billing.remove_line: a covered line gives its session back and leaves a tombstone."""
        held = next((h for h in self.held if h.obj is line.covered_by), None)
        if held is not None:
            use_seq = next(i for i, e in enumerate(held.entries, 1) if e["kind"] == "use" and e["line"] is line)
            held.used -= 1
            held.entries.append({"kind": "reversal", "change": 1, "at": when, "line": line,
                                 "appointment": line.appointment, "reverses_seq": use_seq, "reason": reason})
        line.removed_at, line.removal_reason = when, reason
        self.rows.tombstones.append((Tombstone(kind="invoice_line", patient=self.patient, invoice_line=line,
                                               removed_at=when, reason=reason), line))

    def delete(self, appointment: Appointment, when: dt.datetime, reason: str) -> None:
        appointment.deleted_at = when
        self.rows.tombstones.append((Tombstone(kind="appointment", patient=self.patient, appointment=appointment,
                                               removed_at=when, reason=reason), appointment))


# ------------------------------------------------------------------ planning one patient


@dataclass
class Block:
    """One package's run of visits, and what goes wrong in it (code None = clean)."""

    family: Family
    code: str | None
    uses: int
    first_session: bool = False  # clean variant: the sale ticks "Use first session" for today's visit
    spoiled: int = 1  # MIDDLE_CODES: which visit of the run
    other_first: int = 1  # COVERED_BY_OTHER_PACKAGE: visits of the older package left when the new one is sold
    start: int = 0
    length: int = 0


def plan_dates(rng: random.Random, n: int, interval: int, years: int, today: dt.date) -> list[dt.date]:
    span = n * interval
    latest_start = today - dt.timedelta(days=span + 14)
    earliest_start = today - dt.timedelta(days=max(years * 365, span + 14))
    start = earliest_start + dt.timedelta(days=rng.randint(0, max(0, (latest_start - earliest_start).days)))
    days, day = [], start
    for _ in range(n):
        days.append(day)
        step = interval + (rng.choice((-1, 0, 1)) if interval >= 4 else 0)
        day += dt.timedelta(days=step)
    return days


class Clinic:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tz = zoneinfo.ZoneInfo(TIME_ZONE)
        self.today = dt.datetime.now(self.tz).date()
        self.per_patient = max(1, cfg.visits // max(1, cfg.patients))
        self.interval = max(1, min(14, cfg.years * 365 // self.per_patient))
        self.codes = deque()
        self.counter = [0]
        self.truth: dict[int, list[str]] = {}
        self.long_patient_id: int | None = None

    def next_code(self) -> str:
        if not self.codes:
            shuffled = CODES[:]
            self.rng.shuffle(shuffled)
            self.codes.extend(shuffled)
        return self.codes.popleft()

    def plan_codes(self, k: int, injectable: bool) -> tuple[bool, list[str | None]]:
        """(schedule gap, one code or None per package)."""
        codes: list[str | None] = [None] * k
        if not injectable:
            return False, codes
        pending: list[str] = []
        for i in range(k):
            if self.rng.random() >= self.cfg.fraction:
                continue
            code = pending.pop(0) if pending else self.next_code()
            if code == "SCHEDULE_GAP":
                if i == 0:
                    return True, [None] * k
                pending.append(code)
                continue
            if code == "COVERED_BY_OTHER_PACKAGE" and (i == 0 or codes[i - 1] is not None):
                pending.append(code)
                continue
            codes[i] = code
        self.codes.extendleft(reversed(pending))
        return False, codes

    def plan_blocks(self, codes: list[str | None], families: list[Family]) -> list[Block]:
        blocks = []
        for code in codes:
            fam = blocks[-1].family if code == "COVERED_BY_OTHER_PACKAGE" else None
            if fam is None:
                taken = {b.family.name for b in blocks}
                choices = [f for f in families if f.name not in taken]
                if code == "PACKAGE_EXPIRED":
                    expiring = [f for f in choices if f.template.valid_days]
                    if not expiring:  # no package that expires is left to this patient: inject it later
                        self.codes.appendleft(code)
                        code = None
                    choices = expiring or choices
                fam = self.rng.choice(choices)
            sessions = fam.template.sessions
            if code == "PACKAGE_EXHAUSTED":
                uses = sessions
            elif code in ("PACKAGE_EXPIRED", "PACKAGE_CANCELLED", "POSSIBLE_DOUBLE_USE"):
                uses = self.rng.randint(2, sessions - 1)
            elif code == "COVERED_BY_OTHER_PACKAGE":
                uses = 0
            else:
                uses = self.rng.randint(max(3, sessions - 3), sessions)
            block = Block(fam, code, uses, first_session=code is None and self.rng.random() < 0.3)
            if code in MIDDLE_CODES:
                block.spoiled = self.rng.randint(1, uses - 1)
            if code == "COVERED_BY_OTHER_PACKAGE":
                older = blocks[-1]
                older.uses = sessions  # the older package is used to the end, the newer one never
                older.first_session = False
                block.other_first = self.rng.randint(1, min(3, sessions - 1))
            blocks.append(block)
        return blocks

    # -- one patient
    def add_patient(self, rows: Rows, n_visits: int, k: int, injectable: bool) -> None:
        rng = self.rng
        patient = Patient(first_name=rng.choice(FIRST_NAMES), last_name=rng.choice(LAST_NAMES),
                          date_of_birth=dt.date(rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)))
        rows.patients.append(patient)
        k = min(k, len(self.families) - 1)
        gap, codes = self.plan_codes(k, injectable and self.interval >= 3)
        blocks = self.current_blocks = self.plan_blocks(codes, self.families)
        interval = self.interval if injectable else max(1, min(14, self.cfg.years * 365 // n_visits))
        days = plan_dates(rng, n_visits, interval, self.cfg.years, self.today)
        if not self.layout(blocks, days):  # no room for these injections: a clean patient, inject them later
            self.codes.extend([b.code for b in blocks if b.code] + (["SCHEDULE_GAP"] if gap else []))
            blocks = self.current_blocks = self.plan_blocks([None] * len(blocks), self.families)
            gap = False
            if not self.layout(blocks, days):
                blocks = self.current_blocks = []
        gap_after = self.place_gap(blocks, days) if gap else None
        held_families = {b.family.name for b in blocks}
        fillers = [f for f in self.families if f.name not in held_families]
        sim = PatientSim(rows, patient, self.tz, self.counter)
        owner: dict[int, tuple[Block, int]] = {}
        for b in blocks:
            for i in range(b.length):
                owner[b.start + i] = (b, i)
        block_held: dict[int, Held] = {}
        for slot, day in enumerate(days):
            hour = 10 + rng.randint(0, 6)
            if slot not in owner:
                fam = rng.choice(fillers)
                sim.visit(rng.choice((fam.primary, fam.variant)), sim.at(day, hour))
                continue
            b, i = owner[slot]
            self.play(sim, b, i, day, hour, days, block_held, id(b))
        self.record_truth(rows, blocks, block_held, gap_after, days, sim)

    def layout(self, blocks: list[Block], days: list[dt.date]) -> bool:
        """Give each block its run of slots, in order, with filler visits between."""
        needs = []
        for b in blocks:
            extra = {"FIRST_SESSION_NOT_USED": 1, "PACKAGE_NOT_PAID": 1, "CHARGED_BEFORE_PURCHASE": 1,
                     "PACKAGE_EXHAUSTED": 1, "PACKAGE_CANCELLED": 1, "PACKAGE_EXPIRED": 1}.get(b.code or "", 0)
            needs.append(b.uses + extra)
        spare = len(days) - sum(needs) - 3  # room for a gap after the last run
        if spare < 0:
            return False
        slot = self.rng.randint(0, min(spare, 3 * len(blocks) + 3))
        spare -= slot
        for b, need in zip(blocks, needs, strict=True):
            if b.code == "COVERED_BY_OTHER_PACKAGE":
                # Sold during the older package's run: it shares the older block's slots.
                older = blocks[blocks.index(b) - 1]
                if older.length < 2:
                    return False
                b.other_first = min(b.other_first, older.length - 1)
                b.start = older.start + older.length - b.other_first
                b.length = 0
                continue
            b.start, b.length = slot, need
            if b.family.template.valid_days and not self.fit_validity(b, days):
                return False
            slot = b.start + b.length
            between = self.rng.randint(0, max(0, min(spare, 4)))
            spare -= between
            slot += between
        return slot <= len(days)

    def fit_validity(self, b: Block, days: list[dt.date]) -> bool:
        """Only the injected expiry may fall after the last valid day; a clean run is shortened."""
        if b.start + b.length > len(days):
            return False
        offset = 1 if b.code in ("FIRST_SESSION_NOT_USED", "PACKAGE_NOT_PAID", "CHARGED_BEFORE_PURCHASE") else 0
        last_day = days[b.start + offset] + dt.timedelta(days=b.family.template.valid_days - 1)
        if b.code == "PACKAGE_EXPIRED":
            after = next((s for s in range(b.start + b.uses, len(days)) if days[s] > last_day), None)
            if after is None or days[b.start + b.uses - 1] > last_day:
                return False
            b.length = after - b.start + 1
            return True
        if days[b.start + b.length - 1] <= last_day:
            return True
        if b.code is None:
            while b.uses > 1 and days[b.start + b.uses - 1] > last_day:
                b.uses -= 1
            b.length = b.uses
            return True
        return False

    def place_gap(self, blocks: list[Block], days: list[dt.date]) -> int:
        """Shift every visit after a slot well past the rhythm: no record of any kind inside."""
        runs = [b for b in blocks if not b.family.template.valid_days and b.uses >= 4]
        if runs:
            b = runs[0]
            after = b.start + self.rng.randint(1, b.uses - 3)
        else:
            last = blocks[-1]
            after = last.start + last.length
        after = min(after, len(days) - 3)
        shift = dt.timedelta(days=max(3 * self.interval, 21))
        for i in range(after + 1, len(days)):
            days[i] += shift
        return after

    def play(self, sim: PatientSim, b: Block, i: int, day: dt.date, hour: int, days: list[dt.date],
             block_held: dict[int, Held], key: int) -> None:
        """Slot i of block b."""
        fam, code = b.family, b.code
        price = fam.template.price
        starts = sim.at(day, hour)
        if b.code == "COVERED_BY_OTHER_PACKAGE":
            return
        # a newer package of the same family sold during this run (COVERED_BY_OTHER_PACKAGE)?
        newer = next((o for o in self.current_blocks if o.code == "COVERED_BY_OTHER_PACKAGE"
                      and o.start == b.start + i and o is not b), None)
        if newer is not None:
            block_held[id(newer)] = sim.sell(fam, sim.at(day, 9), pay=price)
        if i == 0:
            if code == "FIRST_SESSION_NOT_USED":
                sim.visit(fam.primary, starts)
                block_held[key] = sim.sell(fam, sim.at(day, 18), pay=price)
                return
            if b.first_session:
                a, _, _ = sim.visit(fam.primary, starts)
                block_held[key] = sim.sell(fam, sim.at(day, 18), pay=price, use_first_session=True,
                                           first_appointment=a)
                return
            if code == "PACKAGE_NOT_PAID":
                held = sim.sell(fam, sim.at(day - dt.timedelta(days=1), 12), pay=price / 2)
                block_held[key] = held
                sim.visit(fam.primary, starts)
                return
            if code == "CHARGED_BEFORE_PURCHASE":
                a = sim.book(fam.primary, starts)
                a.status, a.checked_in_at = "attended", starts  # charged only after the sale, see below
                b.late_visit = a
                return
            block_held[key] = sim.sell(fam, sim.at(day, 9), pay=price)
            sim.visit(fam.primary, starts)
            return
        held = block_held.get(key)
        run = i - (1 if code in ("FIRST_SESSION_NOT_USED", "PACKAGE_NOT_PAID", "CHARGED_BEFORE_PURCHASE") else 0)
        if code == "PACKAGE_NOT_PAID" and i == 1:
            sale = held.obj.sale_invoice
            sim.pay(sale, price - price / 2, sim.at(day, 8))
            sim.activate(held, sim.at(day, 8))
        if code == "CHARGED_BEFORE_PURCHASE" and i == 1:  # late billing, after the sale
            block_held[key] = sim.sell(fam, sim.at(day, 9), pay=price)
            sim.visit(fam.primary, starts)
            late = b.late_visit
            invoice = sim.invoice(late.starts_at, created=sim.at(day, 17))
            line = sim.charge(invoice, fam.primary, sim.at(day, 17), appointment=late)
            sim.pay(invoice, line.amount, sim.at(day, 17, 30))
            return
        if i == b.length - 1 and code in ("PACKAGE_EXHAUSTED", "PACKAGE_EXPIRED", "PACKAGE_CANCELLED"):
            if code == "PACKAGE_CANCELLED":
                sim.cancel(held, sim.at(days[b.start + i - 1] + dt.timedelta(days=1), 12))
            sim.visit(fam.primary, starts)
            return
        if code == "PACKAGE_EXPIRED" and run >= b.uses:
            filler = next(f for f in self.families if f.name not in {x.family.name for x in self.current_blocks})
            sim.visit(filler.primary, starts)
            return
        if code in MIDDLE_CODES and run == b.spoiled:
            self.spoil(sim, b, fam, starts)
            return
        sim.visit(fam.primary, starts)

    def spoil(self, sim: PatientSim, b: Block, fam: Family, starts: dt.datetime) -> None:
        code = b.code
        if code == "NOT_CHECKED_IN":
            sim.book(fam.primary, starts)
        elif code == "NO_CHARGES":
            sim.visit(fam.primary, starts, no_charges=True)
        elif code == "NOT_INVOICED":
            _, _, line = sim.visit(fam.primary, starts)
            sim.remove_line(line, starts + dt.timedelta(hours=1), "charged by mistake")
        elif code == "APPOINTMENT_DELETED":
            a = sim.book(fam.primary, starts)
            sim.delete(a, starts - dt.timedelta(days=2), "booked twice by mistake")
        elif code == "SERVICE_NOT_IN_PACKAGE":
            sim.visit(fam.primary, starts, charge=fam.variant)
        elif code == "POSSIBLE_DOUBLE_USE":
            a, invoice, _ = sim.visit(fam.primary, starts)
            sim.charge(invoice, fam.primary, starts + dt.timedelta(minutes=20), appointment=a)

    def record_truth(self, rows: Rows, blocks: list[Block], block_held: dict[int, Held], gap_after: int | None,
                     days: list[dt.date], sim: PatientSim) -> None:
        for b in blocks:
            held = block_held[id(b)]
            held.code = b.code
            if b.code == "LEDGER_MISMATCH":
                rows.mismatches.append(held)
        if gap_after is not None:
            start, end = days[gap_after], days[gap_after + 1]
            for held in sim.held:
                pp = held.obj
                last = rules.clinic_date(pp.expires_at, self.tz) if pp.expires_at else None
                if rules.clinic_date(pp.sold_at, self.tz) <= end and (last is None or last >= start):
                    held.code = "SCHEDULE_GAP"

    # -- writing
    def flush(self, rows: Rows) -> None:
        with transaction.atomic():
            Patient.objects.bulk_create(rows.patients, batch_size=2000)
            Appointment.objects.bulk_create(rows.appointments, batch_size=2000)
            Invoice.objects.bulk_create(rows.invoices, batch_size=2000)
            PatientPackage.objects.bulk_create([h.obj for h in rows.packages], batch_size=2000)
            through = PatientPackage.eligible_services.through
            through.objects.bulk_create([through(patientpackage_id=h.obj.pk, service_id=h.family.primary.pk)
                                         for h in rows.packages], batch_size=2000)
            real = {h.tmp_id: h.obj.pk for h in rows.packages}
            for ln in rows.lines:
                if hasattr(ln, "_decision"):
                    decision, invoice_date, when = ln._decision
                    record = decision.as_record()
                    record["covered_by"] = real.get(record["covered_by"])
                    for c in record["considered"]:
                        c["patient_package_id"] = real[c["patient_package_id"]]
                    ln.coverage_decision = record | {"invoice_date": invoice_date, "at": when}
            InvoiceLine.objects.bulk_create(rows.lines, batch_size=2000)
            Payment.objects.bulk_create(rows.payments, batch_size=2000)
            for tomb, what in rows.tombstones:
                tomb.content = (line_snapshot(what) if isinstance(what, InvoiceLine)
                                else appointment_snapshot(what))
            Tombstone.objects.bulk_create([t for t, _ in rows.tombstones], batch_size=2000)
            import_entries(
                {"patient_package_id": h.obj.pk, "seq": seq, "kind": e["kind"], "change": e["change"], "at": e["at"],
                 "invoice_line_id": e["line"].pk if e["line"] is not None else None,
                 "appointment_id": e["appointment"].pk if e["appointment"] is not None else None,
                 "reverses_seq": e.get("reverses_seq"), "reason": e["reason"]}
                for h in rows.packages for seq, e in enumerate(h.entries, 1)
            )
        for h in rows.packages:
            code = getattr(h, "code", None)
            self.truth[h.obj.pk] = [code] if code else []
        self.mismatches.extend(rows.mismatches)

    def run(self) -> dict:
        cfg = self.cfg
        clinic = ClinicSettings.load()
        clinic.time_zone = TIME_ZONE
        clinic.save()
        self.families = build_catalog(self.interval)
        self.mismatches: list[Held] = []
        started = time.monotonic()
        sizes = [self.per_patient + (1 if i < cfg.visits - self.per_patient * cfg.patients else 0)
                 for i in range(cfg.patients)]
        plan = [(n, cfg.packages_per_patient, True) for n in sizes]
        if cfg.long_patient_visits:
            plan.append((cfg.long_patient_visits, cfg.packages_per_patient, False))
        with bulk_timestamps():
            for start in range(0, len(plan), cfg.chunk):
                rows = Rows()
                for n, k, injectable in plan[start:start + cfg.chunk]:
                    self.add_patient(rows, n, k, injectable)
                self.flush(rows)
                if cfg.long_patient_visits and start + cfg.chunk >= len(plan):
                    self.long_patient_id = rows.patients[-1].pk
                progress(f"{min(start + cfg.chunk, len(plan))}/{len(plan)} patients, "
                         f"{time.monotonic() - started:.0f}s")
        with connection.cursor() as cursor:
            for held in self.mismatches:  # an integrity fault that only a raw UPDATE can make
                wrong = held.used + 1 if held.used < held.obj.sessions_total else held.used - 1
                cursor.execute("UPDATE clinic_patientpackage SET sessions_used = %s WHERE id = %s",
                               [wrong, held.obj.pk])
            cursor.execute("ANALYZE")  # fresh planner statistics after a bulk load (PostgreSQL: vital)
        return {
            "config": cfg.__dict__,
            "long_patient_id": self.long_patient_id,
            "seconds": round(time.monotonic() - started, 1),
            "packages": {str(pk): codes for pk, codes in self.truth.items()},
        }


def appointment_snapshot(a: Appointment) -> dict:
    """What visits.do_delete_appointment keeps: the appointment as it was, and its service's name."""
    return {"id": a.pk, "patient": a.patient_id, "service": a.service_id, "practitioner": a.practitioner_id,
            "starts_at": a.starts_at.isoformat(), "ends_at": a.ends_at.isoformat(), "status": "booked",
            "no_charges": False, "status_reason": "", "checked_in_at": None, "deleted_at": None,
            "service_name": a.service.name}


def line_snapshot(ln: InvoiceLine) -> dict:
    return {"id": ln.pk, "invoice": ln.invoice_id, "kind": ln.kind, "service": ln.service_id,
            "appointment": ln.appointment_id, "description": ln.description, "amount": str(ln.amount),
            "covered_by": ln.covered_by_id, "session_number": ln.session_number,
            "invoice_number": f"INV-{ln.invoice_id:06d}"}


@contextmanager
def bulk_timestamps():
    """Historical rows keep the times the simulation gives them, not the time of the import."""
    fields = [m._meta.get_field("created_at") for m in (Appointment, Invoice, InvoiceLine, Payment)]
    saved = [f.auto_now_add for f in fields]
    for f in fields:
        f.auto_now_add = False
    try:
        yield
    finally:
        for f, value in zip(fields, saved, strict=True):
            f.auto_now_add = value


def progress(message: str) -> None:
    if os.environ.get("TALLY_BENCH_QUIET") != "1":
        print(message, file=sys.stderr, flush=True)


def generate(cfg: Config) -> dict:
    if Patient.objects.exists():
        raise SystemExit("The database already has patients: generate into an empty, migrated database.")
    return Clinic(cfg).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=Config.patients)
    parser.add_argument("--packages-per-patient", type=int, default=Config.packages_per_patient)
    parser.add_argument("--visits", type=int, default=Config.visits, help="visits in the whole clinic")
    parser.add_argument("--years", type=int, default=Config.years)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--fraction", type=float, default=Config.fraction, help="share of packages spoiled")
    parser.add_argument("--long-patient-visits", type=int, default=Config.long_patient_visits,
                        help="one extra clean patient with this many visits (0: none)")
    parser.add_argument("--small", action="store_true", help="a few dozen patients, every finding kind")
    parser.add_argument("--truth", default="truth.json")
    args = parser.parse_args(argv)
    cfg = SMALL if args.small else Config(
        patients=args.patients, packages_per_patient=args.packages_per_patient, visits=args.visits,
        years=args.years, seed=args.seed, fraction=args.fraction, long_patient_visits=args.long_patient_visits)
    truth = generate(cfg)
    with open(args.truth, "w") as out:
        json.dump(truth, out, indent=1, sort_keys=True)
    injected = sum(1 for codes in truth["packages"].values() if codes)
    print(f"{len(truth['packages'])} packages ({injected} spoiled) in {truth['seconds']}s; truth in {args.truth}")


if __name__ == "__main__":
    main()
