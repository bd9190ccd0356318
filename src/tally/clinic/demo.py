"""The demo clinic: a year of real-looking history, and one patient for every finding.

Everything is built through the do_* actions, in each patient's chronological order,
so the ledger, invoices and coverage decisions are exactly what the product would
have recorded. A *demo clock* stands in for `django.utils.timezone.now` while loading,
so that what the actions stamp with "now" (check-in times, ledger entries, line
creation, audit events, cancellations) is dated in the past like the visits are.

The one thing not done through an action is the LEDGER_MISMATCH patient: an
integrity fault cannot be produced by correct code, so it is simulated, deliberately,
with a raw SQL UPDATE of one package's cached count (see `corrupt_cached_count`).

Deterministic for a given seed and day: the random choices come from `random.Random(seed)`;
dates are relative to today in the clinic's time zone.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from .actions import billing, catalog, sales, visits
from .actions.staff_accounts import do_create_staff
from .actions.two_factor import do_add_known_device
from .models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    Package,
    Patient,
    PatientPackage,
    Service,
    Staff,
)
from .models.patients import format_patient_number
from .models.staff import Role

DEMO_SEED = 20250301
CLINIC_NAME = "Riverside Acupuncture & Wellness"
TIME_ZONE = "America/New_York"
REGULAR_PATIENTS = 185

# Demo logins. A demo, not a clinic: `tally demo` prints them.
DEMO_STAFF = [
    # username, role, first, last, password
    ("olivia", Role.OWNER, "Olivia", "Bennett", "riverside-owner-demo"),
    ("frank", Role.FRONT_DESK, "Frank", "Morales", "riverside-desk-demo"),
    ("grace", Role.FRONT_DESK, "Grace", "Kim", "riverside-desk-demo"),
    ("drchen", Role.PRACTITIONER, "Lin", "Chen", "riverside-practitioner-demo"),
    ("jwhite", Role.PRACTITIONER, "Jordan", "White", "riverside-practitioner-demo"),
    ("sokafor", Role.PRACTITIONER, "Sam", "Okafor", "riverside-practitioner-demo"),
    ("arivera", Role.PRACTITIONER, "Ana", "Rivera", "riverside-practitioner-demo"),
]
DEMO_OWNER = ("olivia", "riverside-owner-demo")
# Owners must use two-factor sign-in, the demo owner too. This key is published (here and in
# the `tally demo` output), so the demo owner's codes are anyone's: `tally democode` prints one.
DEMO_OWNER_TOTP_KEY = b"tally-demo-owner-2fa".hex()
DEMO_DESK = ("frank", "riverside-desk-demo")
# The demo's printed API token belongs to an integration account of its own (an owner that
# cannot sign in on the web), so that signing out as Olivia, which revokes her tokens,
# leaves it working: the README's advice for real integrations.
DEMO_API = ("riverside-api", "Riverside", "integration")


@dataclass(frozen=True)
class Scenario:
    """A patient built to show one finding. `number` is the order of creation: on a fresh
    database the patient is P-00000N; `load_demo` returns the actual patients."""

    number: int
    code: str
    first_name: str
    last_name: str
    story: str

    @property
    def patient_number(self) -> str:
        return format_patient_number(self.number)

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


DEMO_SCENARIOS: list[Scenario] = [
    Scenario(1, "FIRST_SESSION_NOT_USED", "Hannah", "Whitfield",
             "Bought a 10-pack right after her first treatment; the first-session box was not ticked, "
             "so that day's visit was charged apart and never counted."),
    Scenario(2, "NOT_CHECKED_IN", "Marcus", "Delgado",
             "Weekly acupuncture on a 10-pack; one visit two weeks ago is still 'booked': seen but never checked in."),
    Scenario(3, "NO_CHARGES", "Priya", "Raman",
             "Massage 5-pack; one visit was checked in with No Charges, so it used nothing."),
    Scenario(4, "NOT_INVOICED", "Tom", "Becker",
             "Attended a visit whose charge was later removed from the invoice ('entered twice'): "
             "no service on any invoice, the session came back."),
    Scenario(5, "APPOINTMENT_DELETED", "Gloria", "Okonkwo",
             "Says she came five weeks ago; that appointment was permanently deleted as a 'duplicate booking'."),
    Scenario(6, "SCHEDULE_GAP", "Oliver", "Brandt",
             "Weekly acupuncture with a nine-week hole that no appointment, invoice or tombstone explains."),
    Scenario(7, "SERVICE_NOT_IN_PACKAGE", "Sofia", "Marchetti",
             "Holds a 60-minute acupuncture pack; one visit was booked and charged as Acupuncture 90 min."),
    Scenario(8, "PACKAGE_NOT_PAID", "Daniel", "Kowalski",
             "Paid a $300 deposit on his 10-pack; two visits were charged before he paid the rest."),
    Scenario(9, "CHARGED_BEFORE_PURCHASE", "Emily", "Tran",
             "A visit was checked in late, after she bought her pack; its invoice is dated before the sale."),
    Scenario(10, "COVERED_BY_OTHER_PACKAGE", "Rachel", "Goldberg",
             "Bought a Wellness 10 while her expiring acupuncture 10-pack still had sessions; "
             "the visits went to the pack that expires first."),
    Scenario(11, "PACKAGE_EXHAUSTED", "Kevin", "O'Brien",
             "Used all 5 sessions of his pack; the two visits after were charged normally."),
    Scenario(12, "PACKAGE_EXPIRED", "Linda", "Nakamura",
             "Her cupping 6-pack (valid 90 days) expired with a session left; the next visit was charged normally."),
    Scenario(13, "PACKAGE_CANCELLED", "Ahmed", "Hassan",
             "Cancelled his 10-pack with a refund when he planned to move, then kept coming: "
             "those visits were charged normally."),
    Scenario(14, "POSSIBLE_DOUBLE_USE", "Chloe", "Martin",
             "The first-session box was ticked at the sale and that day's visit was checked in too: "
             "two sessions for one visit."),
    Scenario(15, "LEDGER_MISMATCH", "Victor", "Petrov",
             "Simulated integrity fault: his package's cached count was changed by a raw SQL UPDATE "
             "(deliberate, for the demo); the ledger disagrees."),
]

FIRST_NAMES = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Sandra", "Mark", "Margaret",
    "Steven", "Ashley", "Paul", "Kimberly", "Andrew", "Emily", "Joshua", "Donna", "Kenneth", "Michelle",
    "Wei", "Mei", "Hiroshi", "Yuki", "Arjun", "Ananya", "Mohammed", "Fatima", "Carlos", "Lucia",
    "Diego", "Camila", "Olusegun", "Amara", "Dmitri", "Svetlana", "Sean", "Siobhan", "Mateo", "Valentina",
    "Noah", "Olivia", "Liam", "Emma", "Ethan", "Ava", "Lucas", "Mia", "Isaac", "Zoe",
    "Tyrone", "Keisha", "Minh", "Linh", "Ravi", "Deepa", "Omar", "Layla", "Jonah", "Esther",
]
LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Chen", "Wang", "Zhang", "Tanaka", "Sato", "Patel", "Shah", "Khan", "Ali", "Haddad",
    "Cohen", "Levi", "Friedman", "O'Connor", "Murphy", "Kelly", "Sullivan", "Ivanova", "Novak", "Kowalczyk",
    "Okafor", "Adeyemi", "Mensah", "Silva", "Santos", "Costa", "Rossi", "Russo", "Schmidt", "Fischer",
    "Weber", "Dubois", "Laurent", "Jensen", "Larsen", "Andersson", "Kim", "Park", "Choi", "Tran",
]
AREA_CODES = ["212", "347", "646", "718", "917", "201", "914"]
PAY_METHODS = ["card"] * 14 + ["cash"] * 3 + ["insurance"] * 2 + ["HSA card"]
CANCEL_REASONS = ["patient called to reschedule", "sick", "work conflict", "weather", "family emergency"]
PACKAGE_CANCEL_REASONS = ["moving out of state", "changed insurance", "treatment finished early, refund requested"]


@dataclass
class DemoResult:
    clinic: ClinicSettings
    owner: Staff
    desk: Staff
    patients: int
    scenario_patients: dict[str, Patient]
    corrupted_package_id: int
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


class DemoClock:
    """The 'now' that actions see while the demo loads; never later than the real now."""

    def __init__(self, real_now: dt.datetime):
        self.real_now = real_now
        self.moment = real_now

    def now(self) -> dt.datetime:
        return self.moment

    def at(self, moment: dt.datetime) -> None:
        self.moment = min(moment, self.real_now)


@contextmanager
def demo_clock() -> Iterator[DemoClock]:
    original = timezone.now
    clock = DemoClock(original())
    timezone.now = clock.now  # every caller does `timezone.now()`, so this reaches them all
    try:
        yield clock
    finally:
        timezone.now = original


def database_is_empty() -> bool:
    return not (Patient.objects.exists() or Staff.objects.exists() or Service.objects.exists())


def load_demo(seed: int = DEMO_SEED, regular_patients: int = REGULAR_PATIENTS) -> DemoResult:
    """Build the demo clinic into an empty database, in one transaction."""
    started = time.monotonic()
    with transaction.atomic(), demo_clock() as clock:
        builder = DemoBuilder(random.Random(seed), clock)
        result = builder.build(regular_patients)
    result.seconds = time.monotonic() - started
    return result


def corrupt_cached_count(patient_package: PatientPackage) -> None:
    """DELIBERATE integrity fault for the LEDGER_MISMATCH demo patient: move the cached
    `sessions_used` by one behind the ledger's back, as a hand-typed UPDATE would."""
    table = PatientPackage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET sessions_used = sessions_used + 1 WHERE id = %s AND sessions_used < sessions_total",
            [patient_package.pk],
        )


class DemoBuilder:
    def __init__(self, rng: random.Random, clock: DemoClock):
        self.rng = rng
        self.clock = clock
        self.tz = zoneinfo.ZoneInfo(TIME_ZONE)
        self.now = clock.real_now
        self.today = self.now.astimezone(self.tz).date()
        # Scenario visits are counted back from the last weekday before today.
        anchor = self.today - dt.timedelta(days=1)
        while anchor.weekday() >= 5:
            anchor -= dt.timedelta(days=1)
        self.anchor = anchor
        self.counts: dict[str, int] = {}

    # --- small helpers ---------------------------------------------------------------

    def local(self, day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=self.tz)

    def ago(self, days: int, hour: int = 10, minute: int = 0) -> dt.datetime:
        return self.local(self.anchor - dt.timedelta(days=days), hour, minute)

    def tick(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def desk_user(self) -> Staff:
        return self.rng.choice(self.desk_staff)

    def practitioner_for(self, service: Service) -> Staff:
        return self.rng.choice(self.practitioners_by_service[service.pk])

    def create_patient(self, first: str, last: str, registered_at: dt.datetime) -> Patient:
        self.clock.at(registered_at)
        rng = self.rng
        dob = dt.date(rng.randint(1948, 2006), rng.randint(1, 12), rng.randint(1, 28))
        handle = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
        email = f"{handle}{rng.randint(1, 99)}@{rng.choice(['example.com', 'example.net', 'example.org'])}"
        phone = f"({rng.choice(AREA_CODES)}) 555-01{rng.randint(0, 99):02d}"
        return catalog.do_create_patient(acting_user=self.desk_user(), first_name=first, last_name=last,
                                         date_of_birth=dob, email=email if rng.random() < 0.9 else "",
                                         phone=phone)

    def book(self, patient: Patient, service: Service, starts_at: dt.datetime, booked_at: dt.datetime,
             practitioner: Staff | None = None) -> Appointment:
        self.clock.at(booked_at)
        self.tick("appointments")
        return visits.do_book(acting_user=self.desk_user(), patient=patient, service=service, starts_at=starts_at,
                              practitioner=practitioner or self.practitioner_for(service))

    def check_in(self, appointment: Appointment, *, late_by: dt.timedelta = dt.timedelta(minutes=2),
                 **options) -> tuple[Invoice | None, InvoiceLine | None]:
        self.clock.at(appointment.starts_at + late_by)
        user = self.desk_user()
        if appointment.practitioner is not None and self.rng.random() < 0.2:
            user = appointment.practitioner
        _, invoice, line = visits.do_check_in(acting_user=user, appointment=appointment, **options)
        self.tick("check_ins")
        return invoice, line

    def pay(self, invoice: Invoice, amount: Decimal, at: dt.datetime, method: str | None = None,
            reason: str = "") -> None:
        self.clock.at(at)
        billing.do_record_payment(acting_user=self.desk_user(), invoice=invoice, amount=amount,
                                  method=method or self.rng.choice(PAY_METHODS), received_at=self.clock.now(),
                                  reason=reason)
        self.tick("refunds" if amount < 0 else "payments")

    def sell(self, patient: Patient, package: Package, at: dt.datetime, *, use_first_session: bool = False,
             first_session_appointment: Appointment | None = None,
             paid: Decimal | None = None) -> PatientPackage:
        """Sell at `at`; `paid` None means paid in full at the sale."""
        self.clock.at(at)
        amount = package.price if paid is None else paid
        pp, _ = sales.do_sell_package(
            acting_user=self.desk_user(), patient=patient, package=package, use_first_session=use_first_session,
            sold_at=self.clock.now(), first_session_appointment=first_session_appointment,
            payment=(amount, self.rng.choice(PAY_METHODS[:17])) if amount > 0 else None,
        )
        self.tick("packages_sold")
        return pp

    def visit(self, patient: Patient, service: Service, starts_at: dt.datetime, *,
              booked_at: dt.datetime | None = None, pay: bool = True, **check_in_options) -> Appointment:
        """Book, check in and (if not covered) pay at the desk: an ordinary visit."""
        if booked_at is None:  # a few days ahead, but never before what this patient did last
            booked_at = min(max(starts_at - dt.timedelta(days=6), self.clock.now()), starts_at - dt.timedelta(hours=1))
        appointment = self.book(patient, service, starts_at, booked_at)
        invoice, line = self.check_in(appointment, **check_in_options)
        if pay and invoice is not None and invoice.balance > 0:
            self.pay(invoice, invoice.balance, appointment.ends_at + dt.timedelta(minutes=3))
        return appointment

    # --- the clinic ----------------------------------------------------------------

    def build(self, regular_patients: int) -> DemoResult:
        year_ago = self.now - dt.timedelta(days=380)
        self.clock.at(year_ago)
        staff = {}
        for username, role, first, last, password in DEMO_STAFF:
            staff[username] = do_create_staff(acting_user=None, username=username, role=role, password=password,
                                              first_name=first, last_name=last, validate=False)
        owner = staff["olivia"]
        self.owner = owner
        do_add_known_device(acting_user=None, staff=owner, key=DEMO_OWNER_TOTP_KEY)
        self.desk_staff = [staff["frank"], staff["grace"]]
        catalog.do_update_clinic(acting_user=owner, changes={"name": CLINIC_NAME, "time_zone": TIME_ZONE,
                                                             "currency": "USD"})
        self.build_catalog(owner)
        acupuncturists = [staff["drchen"], staff["jwhite"]]
        self.practitioners_by_service = {
            self.acu60.pk: acupuncturists, self.acu90.pk: acupuncturists, self.cupping.pk: acupuncturists,
            self.massage60.pk: [staff["sokafor"]], self.massage90.pk: [staff["sokafor"]],
            self.physio_initial.pk: [staff["arivera"]], self.physio_follow_up.pk: [staff["arivera"]],
        }
        scenario_patients: dict[str, Patient] = {}
        corrupted = None
        for scenario in DEMO_SCENARIOS:
            make = getattr(self, f"scenario_{scenario.code.lower()}")
            registered = self.ago(200 - scenario.number, 9)
            patient = self.create_patient(scenario.first_name, scenario.last_name, registered)
            made = make(patient)
            if scenario.code == "LEDGER_MISMATCH":
                corrupted = made
            scenario_patients[scenario.code] = patient
        self.pending_left = 6
        for index in range(regular_patients):
            self.regular_patient(index)
        assert corrupted is not None
        corrupt_cached_count(corrupted)  # deliberate: see the module docstring
        self.clock.at(self.now)
        return DemoResult(
            clinic=ClinicSettings.load(), owner=owner, desk=staff["frank"],
            patients=Patient.objects.count(), scenario_patients=scenario_patients,
            corrupted_package_id=corrupted.pk, counts=dict(self.counts),
        )

    def build_catalog(self, owner: Staff) -> None:
        def service(name: str, minutes: int, price: str) -> Service:
            return catalog.do_create_service(acting_user=owner, name=name, duration_minutes=minutes,
                                             price=Decimal(price))

        def package(name: str, price: str, sessions: int, services: list[Service],
                    valid_days: int | None = None) -> Package:
            return catalog.do_create_package(acting_user=owner, name=name, price=Decimal(price), sessions=sessions,
                                             service_ids=[s.pk for s in services], valid_days=valid_days)

        self.acu60 = service("Acupuncture 60 min", 60, "95.00")
        self.acu90 = service("Acupuncture 90 min", 90, "130.00")
        self.massage60 = service("Massage 60 min", 60, "100.00")
        self.massage90 = service("Massage 90 min", 90, "140.00")
        self.physio_initial = service("Physiotherapy initial assessment", 60, "120.00")
        self.physio_follow_up = service("Physiotherapy follow-up", 30, "85.00")
        self.cupping = service("Cupping 30 min", 30, "60.00")
        self.acu_5 = package("5 x Acupuncture 60", "450.00", 5, [self.acu60])
        self.acu_10 = package("10 x Acupuncture 60", "850.00", 10, [self.acu60], valid_days=365)
        self.massage_5 = package("5 x Massage 60", "475.00", 5, [self.massage60], valid_days=180)
        self.physio_10 = package("10 x Physiotherapy follow-up", "765.00", 10, [self.physio_follow_up],
                                 valid_days=180)
        self.cupping_6 = package("6 x Cupping", "330.00", 6, [self.cupping], valid_days=90)
        self.wellness_10 = package("Wellness 10 (acupuncture or massage)", "900.00", 10,
                                   [self.acu60, self.massage60])
        retired = package("3 x Intro acupuncture (2024 promotion)", "240.00", 3, [self.acu60], valid_days=60)
        catalog.do_update_package(acting_user=owner, package=retired, changes={"active": False})

    # --- one patient per finding ------------------------------------------------------

    def weekly(self, patient: Patient, service: Service, days_ago: list[int], hour: int = 10, **options) -> None:
        for days in days_ago:
            self.visit(patient, service, self.ago(days, hour), **options)

    def scenario_first_session_not_used(self, patient: Patient) -> PatientPackage:
        first = self.book(patient, self.acu60, self.ago(63, 10), self.ago(66, 15))
        self.check_in(first)  # charged in full: she held no package yet; left for the package
        pp = self.sell(patient, self.acu_10, self.ago(63, 11, 5), use_first_session=False)
        self.weekly(patient, self.acu60, [56, 49, 42, 35, 28])
        return pp

    def scenario_not_checked_in(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(50, 17))
        self.weekly(patient, self.acu60, [49, 42, 35, 28, 21], hour=16)
        self.book(patient, self.acu60, self.ago(14, 16), self.ago(21, 17))  # never checked in
        self.weekly(patient, self.acu60, [7], hour=16)
        return pp

    def scenario_no_charges(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.massage_5, self.ago(43, 12))
        for days in [42, 35, 28, 21, 14]:
            self.visit(patient, self.massage60, self.ago(days, 11), no_charges=(days == 28))
        return pp

    def scenario_not_invoiced(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(43, 12))
        for days in [42, 35, 28, 21, 14, 7]:
            appointment = self.book(patient, self.acu60, self.ago(days, 9), self.ago(days + 6, 9))
            invoice, line = self.check_in(appointment)
            if days == 28 and invoice is not None and line is not None:
                self.clock.at(self.ago(days, 15))
                billing.do_remove_line(acting_user=self.desk_user(), invoice=invoice, line_id=line.pk,
                                       reason="entered twice by mistake")
        return pp

    def scenario_appointment_deleted(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(50, 12))
        for days in [49, 42, 35, 28, 21]:
            if days == 35:
                appointment = self.book(patient, self.acu60, self.ago(days, 14), self.ago(days + 6, 14))
                self.clock.at(self.ago(days, 18))
                visits.do_delete_appointment(acting_user=self.owner, appointment=appointment,
                                             reason="duplicate booking")
                continue
            self.visit(patient, self.acu60, self.ago(days, 14))
        return pp

    def scenario_schedule_gap(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(120, 17))
        self.weekly(patient, self.acu60, [119, 112, 105, 98], hour=8)
        # Nine weeks with no record of any kind: the after-gap visit is booked that morning.
        for days in [35, 28, 21, 14]:
            self.visit(patient, self.acu60, self.ago(days, 8), booked_at=self.ago(days, 7))
        return pp

    def scenario_service_not_in_package(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(43, 17))
        for days in [42, 35, 28, 21, 14, 7]:
            service = self.acu90 if days == 28 else self.acu60
            self.visit(patient, service, self.ago(days, 13), pay=(days != 28))
        return pp

    def scenario_package_not_paid(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(58, 12), paid=Decimal("300.00"))
        self.weekly(patient, self.acu60, [56, 49], hour=15, pay=False)
        self.pay(pp.sale_invoice, pp.price - Decimal("300.00"), self.ago(46, 12), method="card")
        self.weekly(patient, self.acu60, [42, 35, 28, 21, 14], hour=15)
        return pp

    def scenario_charged_before_purchase(self, patient: Patient) -> PatientPackage:
        self.weekly(patient, self.acu60, [56, 49, 42, 35], hour=12)
        forgotten = self.book(patient, self.acu60, self.ago(28, 12), self.ago(35, 13))
        pp = self.sell(patient, self.acu_10, self.ago(26, 17))
        self.weekly(patient, self.acu60, [21], hour=12)
        # Noticed a week late: checking it in now bills it on an invoice dated at the visit.
        self.check_in(forgotten, late_by=dt.timedelta(days=7, hours=1))
        self.weekly(patient, self.acu60, [14, 7], hour=12)
        return pp

    def scenario_covered_by_other_package(self, patient: Patient) -> PatientPackage:
        self.sell(patient, self.acu_10, self.ago(155, 16))  # expires first, so rule 6 uses it first
        self.weekly(patient, self.acu60, [154, 140, 126, 112, 98, 84], hour=9)
        wellness = self.sell(patient, self.wellness_10, self.ago(73, 16))
        self.weekly(patient, self.acu60, [70, 56, 42, 28, 14], hour=9)
        return wellness

    def scenario_package_exhausted(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_5, self.ago(64, 17))
        self.weekly(patient, self.acu60, [63, 56, 49, 42, 35], hour=17)
        self.weekly(patient, self.acu60, [28, 21], hour=17, pay=False)
        return pp

    def scenario_package_expired(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.cupping_6, self.ago(148, 12))
        self.weekly(patient, self.cupping, [147, 126, 105, 84, 63], hour=11)
        self.weekly(patient, self.cupping, [42], hour=11, pay=False)
        return pp

    def scenario_package_cancelled(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(92, 17))
        self.weekly(patient, self.acu60, [91, 84, 77], hour=18)
        self.clock.at(self.ago(74, 11))
        sales.do_cancel_package(acting_user=self.desk_user(), patient_package=pp, reason="moving to Chicago",
                                refund=(Decimal("-595.00"), "card"))
        self.tick("packages_cancelled")
        self.weekly(patient, self.acu60, [70, 63], hour=18, pay=False)
        return pp

    def scenario_possible_double_use(self, patient: Patient) -> PatientPackage:
        appointment = self.book(patient, self.acu60, self.ago(35, 14), self.ago(36, 10))
        pp = self.sell(patient, self.acu_10, self.ago(35, 13, 50), use_first_session=True)
        self.check_in(appointment)  # covered again: the sale already used a session for it
        self.weekly(patient, self.acu60, [28, 21, 14], hour=14)
        return pp

    def scenario_ledger_mismatch(self, patient: Patient) -> PatientPackage:
        pp = self.sell(patient, self.acu_10, self.ago(43, 17))
        self.weekly(patient, self.acu60, [42, 35, 28, 21], hour=15)
        return pp

    # --- everybody else -----------------------------------------------------------------

    def regular_patient(self, index: int) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.38:
            service = self.acu60
        elif roll < 0.56:
            service = self.massage60
        elif roll < 0.70:
            service = self.physio_follow_up
        elif roll < 0.80:
            service = self.cupping
        elif roll < 0.90:
            service = self.acu90
        else:
            service = self.massage90
        choices = {
            self.acu60.pk: [self.acu_10, self.acu_10, self.acu_5, self.acu_5, self.wellness_10],
            self.massage60.pk: [self.massage_5, self.massage_5, self.wellness_10],
            self.physio_follow_up.pk: [self.physio_10],
            self.cupping.pk: [self.cupping_6],
        }.get(service.pk, [])
        buyer = bool(choices) and rng.random() < 0.65
        cadence = dt.timedelta(days=rng.choice([7, 7, 7, 14, 14, 14, 14, 21, 21, 28]))
        hour, minute = rng.randint(8, 17), rng.choice([0, 30])
        weekday = rng.randint(0, 4)
        # Over the year many patients came for a few visits and stopped; the regulars of
        # today started anywhere from two weeks to ten months ago.
        churns = rng.random() < 0.55
        if churns:
            start = self.today - dt.timedelta(days=rng.randint(30, 362))
            max_visits: int | None = rng.randint(2, 7)
        else:
            start = self.today - dt.timedelta(days=int(rng.triangular(14, 240, 21)))
            max_visits = None
        start += dt.timedelta(days=(weekday - start.weekday()) % 7)

        registered = self.local(start - dt.timedelta(days=rng.randint(1, 10)), 9, rng.randint(0, 59))
        patient = self.create_patient(rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), registered)
        package: PatientPackage | None = None
        owed: list[Invoice] = []
        booked_at = registered
        day = start
        done = 0
        last_visit: Appointment | None = None
        while True:
            this_service = self.physio_initial if (service == self.physio_follow_up and done == 0) else service
            starts = self.local(day, hour, minute)
            appointment = self.book(patient, this_service, starts, booked_at)
            if starts >= self.now:
                break  # the next visit, still to come
            roll = rng.random()
            if done and roll < 0.05:
                booked_at = max(starts - dt.timedelta(hours=rng.randint(3, 30)), booked_at + dt.timedelta(minutes=5))
                self.clock.at(booked_at)
                visits.do_cancel_appointment(acting_user=self.desk_user(), appointment=appointment,
                                             reason=rng.choice(CANCEL_REASONS))
                self.tick("cancellations")
            elif done and roll < 0.08:
                booked_at = starts + dt.timedelta(minutes=25)
                self.clock.at(booked_at)
                visits.do_mark_no_show(acting_user=self.desk_user(), appointment=appointment)
                self.tick("no_shows")
            else:
                if buyer and this_service == service and self.needs_package(package, day):
                    package = self.buy_regular(patient, rng.choice(choices), appointment, day, package)
                for unpaid in owed:  # "and last time's balance, please"
                    current = billing.load_invoice(unpaid.pk)
                    if current.balance > 0:
                        self.pay(current, current.balance, starts - dt.timedelta(minutes=5))
                owed = []
                invoice, line = self.check_in(appointment)
                if invoice is not None and invoice.balance > 0:
                    owed = self.pay_visit(invoice, appointment)
                booked_at = appointment.ends_at + dt.timedelta(minutes=5)
                done += 1
                last_visit = appointment
            if max_visits is not None and done >= max_visits:
                break
            day += cadence
        if last_visit is None:
            return
        if churns and package is not None and rng.random() < 0.3:
            self.cancel_regular(package, last_visit)
        elif not churns and not buyer and choices and self.pending_left and rng.random() < 0.35:
            self.sell_pending(patient, choices[0], last_visit)

    def needs_package(self, package: PatientPackage | None, day: dt.date) -> bool:
        if package is None:
            return True
        package.refresh_from_db()
        if package.sessions_remaining <= 0 or package.cancelled_at is not None:
            return True
        return package.expires_at is not None and day > package.expires_at.astimezone(self.tz).date()

    def buy_regular(self, patient: Patient, template: Package, appointment: Appointment, day: dt.date,
                    previous: PatientPackage | None) -> PatientPackage:
        rng = self.rng
        if previous is not None and rng.random() < 0.15:
            template = previous.package  # renewals mostly keep the same pack
        roll = rng.random()
        if roll < 0.4 and day - dt.timedelta(days=1) > self.today - dt.timedelta(days=370):
            # Bought the day before, by phone.
            return self.sell(patient, template, self.local(day - dt.timedelta(days=1), 17, rng.randint(0, 50)))
        at = appointment.starts_at - dt.timedelta(minutes=10)
        if rng.random() < 0.12:
            # Split payment: a deposit in cash, the rest by card a minute later.
            deposit = (template.price * Decimal("0.4")).quantize(Decimal("1"))
            pp = self.sell(patient, template, at, paid=deposit)
            self.pay(pp.sale_invoice, template.price - deposit, at + dt.timedelta(minutes=1), method="card")
            return pp
        if roll < 0.75:
            return self.sell(patient, template, at, use_first_session=True, first_session_appointment=appointment)
        return self.sell(patient, template, at)

    def pay_visit(self, invoice: Invoice, appointment: Appointment) -> list[Invoice]:
        """Mostly paid at the desk; sometimes part now and the rest next time, or nothing yet."""
        rng = self.rng
        at = appointment.ends_at + dt.timedelta(minutes=3)
        roll = rng.random()
        if roll < 0.06:
            return [invoice]
        if roll < 0.12:
            self.pay(invoice, (invoice.balance / 2).quantize(Decimal("1")), at)
            return [invoice]
        self.pay(invoice, invoice.balance, at)
        if roll > 0.985:
            self.pay(invoice, Decimal("-20.00"), at + dt.timedelta(days=1), method="card",
                     reason="goodwill: the session started 20 minutes late")
        return []

    def cancel_regular(self, package: PatientPackage, last_visit: Appointment) -> None:
        package.refresh_from_db()
        at = last_visit.starts_at + dt.timedelta(days=10)
        if package.cancelled_at is not None or package.activated_at is None or package.sessions_remaining < 2:
            return
        if at >= self.now:
            return
        per_session = (package.price / package.sessions_total).quantize(Decimal("0.01"))
        refund = -(per_session * package.sessions_remaining)
        self.clock.at(at)
        sales.do_cancel_package(acting_user=self.desk_user(), patient_package=package,
                                reason=self.rng.choice(PACKAGE_CANCEL_REASONS), refund=(refund, "card"))
        self.tick("packages_cancelled")

    def sell_pending(self, patient: Patient, template: Package, last_visit: Appointment) -> None:
        """Ordered a pack by phone with a deposit; the rest is due at the next visit."""
        at = self.local(last_visit.starts_at.astimezone(self.tz).date() + dt.timedelta(days=1), 16, 30)
        if at >= self.now - dt.timedelta(hours=1):
            return
        next_visit = (Appointment.objects.filter(patient=patient, starts_at__gt=last_visit.starts_at)
                      .order_by("starts_at").first())
        if next_visit is not None and next_visit.starts_at.astimezone(self.tz).date() <= at.astimezone(self.tz).date():
            return
        self.sell(patient, template, at, paid=(template.price * Decimal("0.3")).quantize(Decimal("1")))
        self.pending_left -= 1
