"""The catalog (services, package templates), patients and clinic settings.

A package already sold keeps its snapshot, so none of these edits moves a count.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

from ..audit import record, snapshot
from ..errors import Invalid
from ..models import ClinicSettings, Package, Patient, PatientPackage, Service, Staff
from ..rules import end_of_day
from .common import (
    ANY_STAFF,
    DESK,
    OWNER,
    clinic_action,
    local_date,
    max_length_of,
    money,
    now,
    optional_text,
    require_role,
    require_text,
)

SERVICE_FIELDS = {"name", "duration_minutes", "price", "active"}
PACKAGE_FIELDS = {"name", "price", "sessions", "service_ids", "valid_days", "active"}
# Column lengths, checked after composing (optional_text): Service, Package and the clinic's
# names are all 200, a patient's names 100.
NAME_MAX_LENGTH = max_length_of(Service, "name")
PATIENT_NAME_MAX_LENGTH = max_length_of(Patient, "first_name")


def _clean_service(values: dict[str, Any]) -> dict[str, Any]:
    clean = dict(values)
    if "name" in clean:
        clean["name"] = require_text(clean["name"], "name", "name", NAME_MAX_LENGTH)
    if "price" in clean:
        clean["price"] = money(clean["price"], "price")
        if clean["price"] < 0:
            raise Invalid("A price cannot be negative.", fields={"price": "must be ≥ 0"})
    if "duration_minutes" in clean and not 0 < int(clean["duration_minutes"]) <= 1440:
        raise Invalid("A visit lasts between 1 minute and 24 hours.", fields={"duration_minutes": "1 to 1440"})
    return clean


@clinic_action
def do_create_service(*, acting_user: Staff, name: str, duration_minutes: int, price: Decimal | str,
                      active: bool = True) -> Service:
    require_role(acting_user, *OWNER, doing="edit the catalog")
    values = _clean_service({"name": name, "duration_minutes": duration_minutes, "price": price, "active": active})
    service = Service.objects.create(**values)
    record("service.create", actor=acting_user, obj=service, after=snapshot(service))
    return service


@clinic_action
def do_update_service(*, acting_user: Staff, service: Service, changes: dict[str, Any]) -> Service:
    """Renaming or repricing a service changes future charges only; identity is the row."""
    require_role(acting_user, *OWNER, doing="edit the catalog")
    values = _clean_service({k: v for k, v in changes.items() if k in SERVICE_FIELDS})
    before = snapshot(service)
    for key, value in values.items():
        setattr(service, key, value)
    service.save()
    record("service.update", actor=acting_user, obj=service, before=before, after=snapshot(service))
    return service


def _clean_package(values: dict[str, Any]) -> dict[str, Any]:
    clean = dict(values)
    if "name" in clean:
        clean["name"] = require_text(clean["name"], "name", "name", NAME_MAX_LENGTH)
    if "price" in clean:
        clean["price"] = money(clean["price"], "price")
        if clean["price"] < 0:
            raise Invalid("A price cannot be negative.", fields={"price": "must be ≥ 0"})
    if "sessions" in clean and not 0 < int(clean["sessions"]) <= 1000:
        raise Invalid("A package has 1 to 1000 sessions.", fields={"sessions": "1 to 1000"})
    if clean.get("valid_days") is not None and not 0 < int(clean["valid_days"]) <= 3660:
        raise Invalid("Validity is 1 to 3660 days.", fields={"valid_days": "1 to 3660"})
    if "service_ids" in clean:
        ids = list(dict.fromkeys(clean["service_ids"] or []))
        if not ids:
            raise Invalid("A package covers at least one service.", fields={"service_ids": "at least one"})
        found = set(Service.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise Invalid(f"No such service: {', '.join(map(str, missing))}.", fields={"service_ids": "unknown service"})
        clean["service_ids"] = ids
    return clean


@clinic_action
def do_create_package(*, acting_user: Staff, name: str, price: Decimal | str, sessions: int,
                      service_ids: list[int], valid_days: int | None = None, active: bool = True) -> Package:
    require_role(acting_user, *OWNER, doing="edit the catalog")
    values = _clean_package({"name": name, "price": price, "sessions": sessions, "service_ids": service_ids,
                             "valid_days": valid_days, "active": bool(active)})
    ids = values.pop("service_ids")
    package = Package.objects.create(**values)
    package.services.set(ids)
    record("package_template.create", actor=acting_user, obj=package, after=snapshot(package))
    return package


@clinic_action
def do_update_package(*, acting_user: Staff, package: Package, changes: dict[str, Any]) -> Package:
    """Editing a template changes future sales only: sold packages keep their snapshot."""
    require_role(acting_user, *OWNER, doing="edit the catalog")
    values = _clean_package({k: v for k, v in changes.items() if k in PACKAGE_FIELDS})
    before = snapshot(package)
    ids = values.pop("service_ids", None)
    for key, value in values.items():
        setattr(package, key, value)
    package.save()
    if ids is not None:
        package.services.set(ids)
    record("package_template.update", actor=acting_user, obj=package, before=before, after=snapshot(package))
    return package


@clinic_action
def do_create_patient(*, acting_user: Staff, first_name: str, last_name: str,
                      date_of_birth: dt.date | None = None, email: str = "", phone: str = "") -> Patient:
    require_role(acting_user, *DESK, doing="register patients")
    first = require_text(first_name, "first_name", "first name", PATIENT_NAME_MAX_LENGTH)
    last = require_text(last_name, "last_name", "last name", PATIENT_NAME_MAX_LENGTH)
    # The clinic's today, not the server's (UTC): a baby born today in Auckland is not from the future.
    if date_of_birth is not None and date_of_birth > local_date(now()):
        raise Invalid("A date of birth cannot be in the future.", fields={"date_of_birth": "in the future"})
    patient = Patient.objects.create(first_name=first, last_name=last, date_of_birth=date_of_birth,
                                     email=optional_text(email, "email", 254),
                                     phone=optional_text(phone, "phone", 40))
    record("patient.create", actor=acting_user, obj=patient, patient_id=patient.pk, after=snapshot(patient))
    return patient


@clinic_action
def do_record_chart_view(*, acting_user: Staff, patient: Patient) -> None:
    """SPEC "Who uses it": every view of a patient's chart is written to the audit log."""
    require_role(acting_user, *ANY_STAFF, doing="view patient charts")
    record("patient.view_chart", actor=acting_user, obj=patient, patient_id=patient.pk)


@clinic_action
def do_update_clinic(*, acting_user: Staff, changes: dict[str, Any]) -> ClinicSettings:
    require_role(acting_user, *OWNER, doing="change clinic settings")
    settings = ClinicSettings.load()
    before = snapshot(settings)
    kept = 0
    if "name" in changes:
        settings.name = require_text(changes["name"], "name", "clinic name", NAME_MAX_LENGTH)
    if "time_zone" in changes:
        try:
            zoneinfo.ZoneInfo(str(changes["time_zone"]))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise Invalid("Unknown time zone.", fields={"time_zone": "an IANA name such as Europe/Paris"}) from None
        old_tz = settings.tz
        settings.time_zone = str(changes["time_zone"])
        kept = keep_last_valid_days(old_tz, settings.tz)
    if "currency" in changes:
        code = str(changes["currency"] or "").upper()
        if len(code) != 3 or not code.isalpha():
            raise Invalid("A currency is a three-letter code.", fields={"currency": "ISO 4217 code such as USD"})
        settings.currency = code
    if "no_show_uses_session" in changes:
        settings.no_show_uses_session = bool(changes["no_show_uses_session"])
    settings.save()
    record("clinic.update", actor=acting_user, obj=settings, before=before,
           after=snapshot(settings) | ({"package_expiries_moved": kept} if kept else {}))
    return settings


def keep_last_valid_days(old_tz: dt.tzinfo, new_tz: dt.tzinfo) -> int:
    """Rule 12 when the clinic changes its time zone: a package's expiry is the end of its last
    valid day in the clinic's zone, and that day stays the same calendar date ("valid until 14
    June"), so the expiry moves to the end of that date in the new zone. Kept as the instant of
    the old zone, it fell on another date or inside a day there: the package covered visits of a
    day its status said it had expired, or said "expired" on the evening of its last day.
    Returns how many expiries moved."""
    if str(old_tz) == str(new_tz):
        return 0
    moved: list[PatientPackage] = []
    packages = (PatientPackage.objects.select_for_update().filter(expires_at__isnull=False)
                .order_by("pk").only("pk", "expires_at"))
    for package in packages:
        if package.expires_at is None:  # filtered out above; for the type checker
            continue
        expires_at = end_of_day(local_date(package.expires_at, old_tz), new_tz)
        if expires_at != package.expires_at:
            package.expires_at = expires_at
            moved.append(package)
    PatientPackage.objects.bulk_update(moved, ["expires_at"], batch_size=1000)
    return len(moved)
