"""Read patients' whole histories, ignoring every list filter and date range.

A fixed number of queries per call, whatever the history's length or the number of
patients asked for: the clinic audit loads patients in chunks through the same code.

Speed matters here (a patient with a thousand visits is read in a few milliseconds): rows
come back as plain tuples through a cursor, the SQL of each query is compiled once per
shape, and every column is converted by the one function it needs. Django's generic
per-value converters and dict rows cost many times the fetch itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from django.db import connections, models, transaction
from django.db.models import QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from ..models import (
    Appointment,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    PackageLedgerEntry,
    Patient,
    PatientPackage,
    Payment,
    Service,
    Tombstone,
)
from ..models.patients import format_patient_number
from .facts import (
    EntryFact,
    History,
    InvoiceFact,
    LineFact,
    PackageFact,
    PaymentFact,
    TombstoneFact,
    VisitFact,
)

CENT = decimal.Decimal("0.01")
ZERO = decimal.Decimal("0.00")
_FROM_FLOAT = decimal.Context(prec=15).create_decimal_from_float
_UTC = dt.UTC


def aware(value: dt.datetime | str | None) -> dt.datetime | None:
    """A UTC datetime from what the database gave: an aware datetime (PostgreSQL) or the
    text Django stores on SQLite (UTC, no offset: one C call parses it with its zone)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value + "+00:00")
        except ValueError:  # text that carries its own offset
            value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def money(value: decimal.Decimal | float | int | str | None) -> decimal.Decimal | None:
    if value is None or isinstance(value, decimal.Decimal):
        return value
    return _money(value)


@functools.lru_cache(maxsize=4096)  # a clinic's prices repeat: convert each once
def _money(value: float | int | str) -> decimal.Decimal:
    if isinstance(value, float):  # SQLite stores decimals as numbers: convert as Django does
        return _FROM_FLOAT(value).quantize(CENT)
    return decimal.Decimal(value).quantize(CENT)


def from_json(value: str | bytes | dict | list | None) -> dict | list | None:
    return json.loads(value) if isinstance(value, str | bytes) else value


# ------------------------------------------------------------------ the queries

def for_raw_read(qs: QuerySet) -> QuerySet:
    """The same values_list, except that on SQLite a datetime column is read as the text
    Django stored: `aware()` parses it in one step, where the driver's converter and a
    replace() of the zone cost three times as much."""
    if connections[qs.db].vendor != "sqlite":
        return qs
    names = list(qs._fields)  # type: ignore[attr-defined]  # values_list()'s names
    fields = {f.name: f for f in qs.model._meta.concrete_fields}
    texts = {f"{name}__text": Cast(name, TextField()) for name in names
             if isinstance(fields.get(name), models.DateTimeField)}
    if not texts:
        return qs
    return qs.annotate(**texts).values_list(*(f"{n}__text" if f"{n}__text" in texts else n for n in names))


# Each query of a history: the queryset for some patients, with the columns in the order
# its rows are unpacked below.
QUERIES: dict[str, Callable[[list[int]], QuerySet]] = {
    "visits": lambda ids: Appointment.all_objects.filter(patient_id__in=ids).order_by("starts_at", "id").values_list(
        "id", "patient_id", "service_id", "practitioner_id", "starts_at", "status", "no_charges", "deleted_at"),
    "lines": lambda ids: InvoiceLine.objects.filter(invoice__patient_id__in=ids).order_by("id").annotate(
        considered=KeyTextTransform("considered", "coverage_decision")).values_list(
        "id", "invoice_id", "kind", "service_id", "patient_package_id", "appointment_id", "description",
        "list_price", "amount", "covered_by_id", "session_number", "not_covered_reason",
        "considered", "created_at", "removed_at"),
    "payments": lambda ids: Payment.objects.filter(invoice__patient_id__in=ids).order_by("received_at", "id")
    .values_list("id", "invoice_id", "amount", "method", "received_at", "reason"),
    "invoices": lambda ids: Invoice.objects.filter(patient_id__in=ids).order_by("issued_at", "id").values_list(
        "id", "patient_id", "issued_at", "voided_at"),
    "eligible": lambda ids: PatientPackage.eligible_services.through.objects.filter(
        patientpackage__patient_id__in=ids).values_list("patientpackage_id", "service_id"),
    "packages": lambda ids: PatientPackage.objects.filter(patient_id__in=ids).order_by("sold_at", "id").values_list(
        "id", "patient_id", "package_id", "name", "price", "sessions_total", "sessions_used", "sale_invoice_id",
        "sold_at", "use_first_session", "first_session_appointment_id", "activated_at", "expires_at",
        "cancelled_at", "valid_days"),
    "entries": lambda ids: PackageLedgerEntry.objects.filter(patient_package__patient_id__in=ids).order_by(
        "patient_package_id", "seq").values_list(
        "id", "patient_package__patient_id", "patient_package_id", "seq", "kind", "change", "used_after", "at",
        "invoice_line_id", "appointment_id", "reverses_id", "reason"),
    "tombstones": lambda ids: Tombstone.objects.filter(patient_id__in=ids).order_by("removed_at", "id").values_list(
        "id", "patient_id", "kind", "appointment_id", "invoice_line_id", "content", "removed_at", "reason",
        "removed_by__first_name", "removed_by__last_name", "removed_by__username"),
    "patients": lambda ids: Patient.objects.filter(pk__in=ids).values_list("pk"),
}
# What read_all() reads: the history's queries, and the catalog's services (their names and
# durations, for the messages), in the same snapshot.
SERVICES = "services"
READS = (*QUERIES, SERVICES)

_compiled: dict[tuple[str, str, int], tuple[str, list, list[int]]] = {}
_PROBE = -(10**15)  # ids no row has: where they land in the parameters, the real ids go


def sql_for(name: str, ids: list[int], using: str = "default") -> tuple[str, list]:
    """The SQL of query `name` for these (distinct, sorted) ids, compiled once per database
    and number of ids: compiling costs more than running it for one patient."""
    if name == SERVICES:  # the same for every patient
        key = (name, connections[using].vendor, 0)
        if key not in _compiled:
            sql, params = Service.objects.order_by().values_list("id", "name", "duration_minutes").query.sql_with_params()
            _compiled[key] = (sql, list(params), [])
        return _compiled[key][0], list(_compiled[key][1])
    key = (name, connections[using].vendor, len(ids))
    compiled = _compiled.get(key)
    if compiled is None:
        probe = [_PROBE + i for i in range(len(ids))]
        sql, params = for_raw_read(QUERIES[name](probe)).query.sql_with_params()
        slots = [i for i, value in enumerate(params) if isinstance(value, int) and value in probe]
        if [params[i] for i in slots] != probe:  # the ids went in some other way: compile every time
            sql, params = for_raw_read(QUERIES[name](ids)).query.sql_with_params()
            return sql, list(params)
        compiled = _compiled[key] = (sql, list(params), slots)
    sql, template, slots = compiled
    bound = list(template)
    for slot, value in zip(slots, ids, strict=True):
        bound[slot] = value
    return sql, bound


@contextlib.contextmanager
def snapshot(using: str = "default") -> Iterator[None]:
    """One consistent view of the database for all of a history's queries. Read one by one,
    a check-in committed between the packages query and the ledger query would show a
    count that disagrees with its ledger: a false LEDGER_MISMATCH. Inside a transaction
    already (a fix's answer), the caller's view is used as it is."""
    connection = connections[using]
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:  # one round trip for both
                cursor.execute(f"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; {PLANNER}")
            yield
        return
    # SQLite: a deferred transaction reads one snapshot (WAL) and takes no write lock, where
    # Django's atomic() would begin IMMEDIATE and hold writers back for the whole read.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        # Nothing was written, so COMMIT only ends the read; if SQLite already ended the
        # transaction itself (a failed read can), leave the original error alone.
        if connection.connection is not None and connection.connection.in_transaction:
            with connection.cursor() as cursor:
                cursor.execute("COMMIT")


# A patient's rows are a few index probes each; with the default cost of a random page (4,
# for spinning disks) the planner scanned every payment of the clinic instead: 67 ms
# against 4 for a 1,000-visit patient (bench/README.md). For the read's transaction only.
PLANNER = "SET LOCAL random_page_cost = 1.1"


def read_all(ids: list[int]) -> dict[str, list[tuple]]:
    """Every query of `QUERIES` (and the services) for these ids, in one snapshot.

    On PostgreSQL the reads go out in one pipeline (psycopg's pipeline mode): ten reads in
    one round trip instead of ten, run by the server back to back. Each still goes through
    Django's cursor, so it is counted and logged like any other query."""
    connection = connections["default"]
    with snapshot():
        if connection.vendor != "postgresql":
            return {name: typed(name, rows(name, ids)) if name in QUERIES else rows(name, ids) for name in READS}
        with connection.wrap_database_errors, connection.connection.pipeline(), contextlib.ExitStack() as cursors:
            pending = []
            for name in READS:
                sql, params = sql_for(name, ids)
                cursor = cursors.enter_context(connection.cursor())
                _fast_timestamps(cursor.cursor)
                cursor.execute(sql, params)
                pending.append((name, cursor))
            return {name: cursor.fetchall() for name, cursor in pending}


@functools.cache
def _converters(name: str) -> tuple[tuple[int, Callable], ...]:
    """(column, converter) for the columns of query `name` that SQLite gives untyped:
    datetimes as the text Django stores, decimals as numbers, booleans as 0/1. PostgreSQL
    gives them typed already, so its rows are used as they come."""
    qs = QUERIES[name]([0])
    fields = {f.name: f for f in qs.model._meta.concrete_fields}
    by_kind = ((models.DateTimeField, aware), (models.DecimalField, money), (models.BooleanField, bool))
    return tuple((i, convert) for i, column in enumerate(qs._fields)  # type: ignore[attr-defined]
                 for kind, convert in by_kind if isinstance(fields.get(column), kind))


def typed(name: str, rows: list[tuple]) -> list[tuple]:
    """SQLite's rows of query `name` with every column of its Python type (see _converters)."""
    converters = _converters(name)
    if not converters:
        return rows
    typed_rows = []
    for row in rows:
        cells = list(row)
        for i, convert in converters:
            if cells[i] is not None:
                cells[i] = convert(cells[i])
        typed_rows.append(tuple(cells))
    return typed_rows


def rows(name: str, ids: list[int]) -> list[tuple]:
    sql, params = sql_for(name, ids)
    connection = connections["default"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _fast_timestamps(cursor.cursor)
        cursor.execute(sql, params)
        return cursor.fetchall()


def _fast_timestamps(cursor) -> None:
    """psycopg's own (C) loader of timestamptz for this cursor: Django's, which pins the
    connection's time zone, is written in Python and costs more than the rest of the load.
    Django sets the session's TimeZone to UTC, so the values are the same aware datetimes."""
    import psycopg
    from psycopg.pq import Format

    oid = psycopg.postgres.types["timestamptz"].oid
    cursor.adapters.register_loader(oid, psycopg.adapters.get_loader(oid, Format.TEXT))


# ------------------------------------------------------------------ loading


def load_history(patient_id: int, *, now: dt.datetime | None = None) -> History:
    return load_histories([patient_id], now=now)[patient_id]


def load_histories(patient_ids: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, History]:
    ids = sorted(set(patient_ids))
    clinic = ClinicSettings.load()
    now = now or timezone.now()
    read = read_all(ids)
    names: dict[int, str] = {}
    durations: dict[int, int] = {}
    for sid, name, minutes in read[SERVICES]:
        names[sid], durations[sid] = name, minutes
    existing = {pid for (pid,) in read["patients"]}

    visits: dict[int, list[VisitFact]] = defaultdict(list)
    for vid, pid, service_id, practitioner_id, starts_at, status, no_charges, deleted_at in read["visits"]:
        visits[pid].append(VisitFact(vid, service_id, practitioner_id, starts_at, status, no_charges,
                                     deleted_at is not None))

    lines: dict[int, list[LineFact]] = defaultdict(list)
    for (lid, invoice_id, kind, service_id, package_id, appointment_id, description, list_price, amount, covered_by,
         session_number, reason, considered, created_at, removed_at) in read["lines"]:
        lines[invoice_id].append(LineFact(
            lid, invoice_id, kind, service_id, package_id, appointment_id, description, list_price,
            amount, covered_by, session_number, reason, considered, created_at, removed_at))

    payments: dict[int, list[PaymentFact]] = defaultdict(list)
    for pay_id, invoice_id, amount, method, received_at, reason in read["payments"]:
        payments[invoice_id].append(PaymentFact(pay_id, invoice_id, amount, method, received_at, reason))

    invoices: dict[int, list[InvoiceFact]] = defaultdict(list)
    for inv_id, pid, issued_at, voided_at in read["invoices"]:
        inv_lines = tuple(lines.get(inv_id, ()))
        inv_payments = tuple(payments.get(inv_id, ()))
        total = paid = ZERO
        for ln in inv_lines:
            if ln.removed_at is None:
                total += ln.amount
        for payment in inv_payments:
            paid += payment.amount
        invoices[pid].append(InvoiceFact(
            inv_id, f"INV-{inv_id:06d}", issued_at, voided_at, inv_lines, inv_payments, total, paid))

    eligible: dict[int, set[int]] = defaultdict(set)
    for package_id, service_id in read["eligible"]:
        eligible[package_id].add(service_id)
    packages: dict[int, list[PackageFact]] = defaultdict(list)
    for (pp_id, pid, package_id, name, price, total, used, sale_invoice_id, sold_at, use_first, first_visit,
         activated_at, expires_at, cancelled_at, valid_days) in read["packages"]:
        packages[pid].append(PackageFact(  # in the order of its fields
            pp_id, package_id, name, price, total, used, frozenset(eligible.get(pp_id, ())), sale_invoice_id,
            sold_at, use_first, first_visit, activated_at, expires_at, cancelled_at, valid_days,
        ))

    entries: dict[int, list[EntryFact]] = defaultdict(list)
    for (entry_id, pid, package_id, seq, kind, change, used_after, at, line_id, appointment_id, reverses_id,
         reason) in read["entries"]:
        entries[pid].append(EntryFact(entry_id, package_id, seq, kind, change, used_after, at, line_id,
                                      appointment_id, reverses_id, reason))

    tombstones: dict[int, list[TombstoneFact]] = defaultdict(list)
    for t_id, pid, kind, appointment_id, line_id, content, removed_at, reason, *by in read["tombstones"]:
        first, last, username = by
        removed_by = f"{first or ''} {last or ''}".strip() or username or ""  # Staff.display_name
        tombstones[pid].append(TombstoneFact(t_id, kind, appointment_id, line_id, cast(dict, from_json(content)) or {},
                                             removed_at, reason, removed_by))

    return {
        pid: History(
            patient_id=pid,
            patient_number=format_patient_number(pid),
            tz=clinic.tz,
            now=now,
            services=names,
            service_durations=durations,
            visits=tuple(visits.get(pid, ())),
            invoices=tuple(invoices.get(pid, ())),
            packages=tuple(packages.get(pid, ())),
            entries=tuple(entries.get(pid, ())),
            tombstones=tuple(tombstones.get(pid, ())),
            currency=clinic.currency,
        )
        for pid in ids
        if pid in existing
    }
