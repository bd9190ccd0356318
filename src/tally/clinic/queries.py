"""Read-side rules shared by the front ends: who may see what, and the lists they read.

Writes go through `actions`; these only read, and apply the same role rules.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal
from functools import reduce

from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db.models import (
    CharField,
    DecimalField,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Replace, Round

from .errors import Forbidden, NotFound
from .models import Appointment, Invoice, InvoiceLine, Patient, Payment, Staff
from .models.billing import InvoiceStatus
from .models.patients import parse_patient_number
from .models.staff import Role


def visible_appointment(viewer: Staff, appointment_id: int) -> Appointment:
    """Owner and front desk see every appointment; a practitioner only their own."""
    appointment = Appointment.objects.filter(pk=appointment_id).first()
    if appointment is None:
        raise NotFound("No such appointment.")
    if viewer.role == Role.PRACTITIONER and appointment.practitioner_id != viewer.pk:
        raise Forbidden("Practitioners may see only their own appointments.")
    return appointment


def schedule_for_day(viewer: Staff, day: dt.date, tz: dt.tzinfo) -> QuerySet[Appointment]:
    """One clinic-local day's live appointments; a practitioner's schedule holds only theirs."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    appointments = Appointment.objects.filter(starts_at__gte=start, starts_at__lt=end)
    if viewer.role == Role.PRACTITIONER:
        appointments = appointments.filter(practitioner=viewer)
    return appointments


# How people write a phone number around its digits.
PHONE_PUNCTUATION = (" ", "-", ".", "(", ")", "+", "/")
PHONE_DIGITS_AT_LEAST = 4  # fewer digits than this match too much of every number


class UnicodeLower(Func):
    """LOWER of every letter, not only ASCII ones: PostgreSQL's LOWER already is; on SQLite,
    Python's str.lower (registered on each connection by the clinic app)."""

    function = "LOWER"
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, function="tally_lower", **extra)


def search_patients(text: str | None) -> QuerySet[Patient]:
    """Patients matching every word of `text` in their names or email, or whose phone number
    holds its digits (however either is written), or whose number it is (P-000042, 000042, 42)."""
    patients = Patient.objects.all()
    text = unicodedata.normalize("NFC", (text or "").strip())  # as names are stored (optional_text)
    if not text:
        return patients
    if "\x00" in text:
        return patients.none()  # no stored text holds NUL, and PostgreSQL refuses it in a query
    # Both sides lowered, every letter (UnicodeLower): SQLite's icontains folds ASCII only.
    patients = patients.annotate(first_lower=UnicodeLower("first_name"), last_lower=UnicodeLower("last_name"),
                                 email_lower=UnicodeLower("email"))
    # "Lopez, Maria", as lists show a name, is two words: a comma separates like a space.
    words = [Q(first_lower__contains=w) | Q(last_lower__contains=w) | Q(email_lower__contains=w)
             for w in text.lower().replace(",", " ").split()]
    if not words:
        return patients.none()
    match = reduce(lambda a, b: a & b, words)
    digits = reduce(lambda t, mark: t.replace(mark, ""), PHONE_PUNCTUATION, text)
    number: int | None
    if digits.isascii() and digits.isdigit():
        number = int(digits)
        if len(digits) >= PHONE_DIGITS_AT_LEAST:
            phone: Func | F = F("phone")
            for mark in PHONE_PUNCTUATION:
                phone = Replace(phone, Value(mark), Value(""))
            patients = patients.annotate(phone_digits=phone)
            match |= Q(phone_digits__contains=digits)
    else:
        number = parse_patient_number(text)
    if number is not None and number < 2**63:
        match |= Q(pk=number)
    return patients.filter(match)


def bookable_staff() -> QuerySet[Staff]:
    return Staff.objects.filter(is_active=True)


def practitioners() -> QuerySet[Staff]:
    """Who a visit can be booked with: active staff but the front desk, and but an integration's
    account (an owner made without a password: tokens only, never at the clinic). The staff
    site's choices and the booking actions' check both ask this."""
    return (Staff.objects.filter(is_active=True).exclude(role=Role.FRONT_DESK)
            .exclude(role=Role.OWNER, password__startswith=UNUSABLE_PASSWORD_PREFIX)
            .order_by("first_name", "username"))


def invoices_in_status(invoices: QuerySet[Invoice], status: str) -> QuerySet[Invoice]:
    """Filter by the derived status (Invoice.status) in the database: void, else paid when
    payments reach the total of the live lines, partially paid when some is paid.

    The sums are of whole cents: SQLite sums decimals as binary floats (95.00 + 49.90 +
    59.95 is 204.85000000000002 there), which would list a fully paid invoice as partly
    paid; a sum of rounded cents is exact on both databases."""
    if status == InvoiceStatus.VOID:
        return invoices.filter(voided_at__isnull=False)
    cents = DecimalField(max_digits=14, decimal_places=0)
    zero = Value(Decimal("0"), output_field=cents)

    def in_cents(rows: QuerySet) -> Subquery:
        return Subquery(
            rows.filter(invoice=OuterRef("pk")).values("invoice")
            .annotate(sum=Sum(Round(F("amount") * Value(100)), output_field=cents)).values("sum"),
            output_field=cents,
        )

    invoices = invoices.filter(voided_at__isnull=True).annotate(
        live_total=Coalesce(in_cents(InvoiceLine.objects.filter(removed_at__isnull=True)), zero),
        paid_total=Coalesce(in_cents(Payment.objects.all()), zero),
    )
    if status == InvoiceStatus.PAID:
        return invoices.filter(paid_total__gte=F("live_total"))
    if status == InvoiceStatus.PARTIALLY_PAID:
        return invoices.filter(paid_total__lt=F("live_total"), paid_total__gt=0)
    return invoices.filter(paid_total__lt=F("live_total"), paid_total__lte=0)
