"""Row locks for actions: taken once per transaction, always in this order.

    appointment -> invoice -> the patient's packages (by id)

PostgreSQL takes real row locks with a lock timeout that becomes a 409; SQLite
serialises writers already (transaction_mode IMMEDIATE + busy timeout), so the
same calls are plain reads there. Every read that a decision depends on happens
after the lock, inside the same transaction as the write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import OperationalError, connection
from django.db.models import QuerySet

from .compiled import Compiled
from .errors import Conflict, NotFound
from .models import Appointment, Invoice, PatientPackage


def _for_update(qs: QuerySet, nowait: bool = False) -> QuerySet:
    if connection.vendor == "postgresql":
        # of=("self",): select_related rows (an appointment's patient and service) stay
        # unlocked, or one check-in would block every other patient booked for that service.
        return qs.select_for_update(no_key=True, of=("self",), nowait=nowait)
    return qs


def set_lock_timeout() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %s", [f"{settings.TALLY_LOCK_TIMEOUT_MS}ms"])


@contextmanager
def lock_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if "lock timeout" in str(exc).lower() or "could not obtain lock" in str(exc).lower():
            raise Conflict("Someone else is changing this record; please try again.") from exc
        raise


# The hottest locks (every check-in takes them), compiled once per connection (compiled.py).
_APPOINTMENT = Compiled(
    lambda pk: _for_update(Appointment.objects.select_related("service", "patient")).filter(pk=pk)[:2], int)
_APPOINTMENT_INCLUDING_DELETED = Compiled(
    lambda pk: _for_update(Appointment.all_objects.select_related("service", "patient")).filter(pk=pk)[:2], int)
_PATIENT_PACKAGES = Compiled(
    lambda patient_id: _for_update(PatientPackage.objects.filter(patient_id=patient_id)).order_by("pk"), int)


def _eligible_pairs(**where):
    """(package id, service id) pairs of the packages' eligible services: one query shape for
    the locked read below and for `with_eligible_ids`, so the two cannot drift apart."""
    return PatientPackage.eligible_services.through.objects.filter(**where).values_list(
        "patientpackage_id", "service_id")


_PATIENT_ELIGIBLE_SERVICES = Compiled(lambda patient_id: _eligible_pairs(patientpackage__patient_id=patient_id), int)


# The first of the two int4 keys of pg_advisory_xact_lock(int4, int4) for Idempotency-Keys
# ("TI" for Tally idempotency); the audit chain's one-bigint lock lives in another key space.
IDEMPOTENCY_LOCK_SPACE = 0x5449


def lock_idempotency_key(staff_id: int, key: str) -> None:
    """Taken before a keyed request looks for its stored answer, and held to its commit: a
    resent request waits for the first and then replays its answer, instead of running the
    action again against what the first changed (a 409 "already checked in", a 422 "more
    than the balance"). SQLite's IMMEDIATE transactions serialise the two already."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"{staff_id}:{key}".encode()).digest()
    with lock_errors(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                       [IDEMPOTENCY_LOCK_SPACE, int.from_bytes(digest[:4], "big", signed=True)])


def lock_appointment(appointment_id: int, *, include_deleted: bool = False) -> Appointment:
    query = _APPOINTMENT_INCLUDING_DELETED if include_deleted else _APPOINTMENT
    with lock_errors():
        try:
            return query.get(appointment_id)
        except Appointment.DoesNotExist:
            raise NotFound("No such appointment.") from None


def lock_invoice(invoice_id: int, *, nowait: bool = False) -> Invoice:
    """nowait: for an invoice needed after the package locks, against the order above; waiting
    there could close a deadlock cycle, so a busy invoice is a Conflict ("try again") at once."""
    with lock_errors():
        try:
            return _for_update(Invoice.objects.all(), nowait=nowait).get(pk=invoice_id)
        except Invoice.DoesNotExist:
            raise NotFound("No such invoice.") from None


def lock_patient_packages(patient_id: int) -> list[PatientPackage]:
    """All of one patient's packages, locked in id order, with their eligible services."""
    with lock_errors():
        packages = _PATIENT_PACKAGES.all(patient_id)
    if not packages:
        return packages
    # Read after the lock, as before: the services of every package of this patient.
    return _set_eligible_ids(packages, _PATIENT_ELIGIBLE_SERVICES.all(patient_id))


def with_eligible_ids(packages: list[PatientPackage]) -> list[PatientPackage]:
    """Set `eligible_ids` (the snapshot's service ids) on each package, in one query."""
    return _set_eligible_ids(packages, _eligible_pairs(patientpackage_id__in=[p.pk for p in packages]))


def _set_eligible_ids(packages: list[PatientPackage], services: Iterable[tuple[int, int]]) -> list[PatientPackage]:
    eligible: dict[int, set[int]] = {}
    for package_id, service_id in services:
        eligible.setdefault(package_id, set()).add(service_id)
    for package in packages:
        package.eligible_ids = frozenset(eligible.get(package.pk, ()))
    return packages
