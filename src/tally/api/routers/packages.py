"""Packages sold to patients: sell, read, ledger, cancel (with refund), extend expiry."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from tally.clinic.actions.sales import do_cancel_package, do_sell_package, do_set_expiry
from tally.clinic.models import Appointment, Package, PackageLedgerEntry, Patient, PatientPackage

from .. import render
from ..idempotency import clinic_write
from ..lookups import clinic_tz, get_or_404, get_referenced, viewer
from ..pagination import paginate
from ..reads import Shown, audit_read
from ..schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    CancelPackageIn,
    ExpiryPatch,
    LedgerPage,
    PageParams,
    PatientPackageOut,
    PatientPackagePage,
    SaleIn,
    SaleOut,
)
from ..types import Id, resolve_moment

router = Router(tags=["packages sold"])


def patient_packages() -> Any:
    return PatientPackage.objects.prefetch_related("eligible_services")


@router.post("/patients/{patient_id}/packages", response={201: SaleOut, **WRITE_ERRORS})
@clinic_write
def sell_package(request: HttpRequest, patient_id: Id, payload: SaleIn) -> Status:
    """Sell on a new invoice. `use_first_session` must be answered (rule 5)."""
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    package = get_referenced(Package.objects.all(), payload.package_id, "package_id", "package")
    first_visit = get_referenced(Appointment.objects.all(), payload.first_session_appointment_id,
                                 "first_session_appointment_id", "appointment")
    sold, invoice = do_sell_package(
        acting_user=viewer(request),
        patient=patient,
        package=package,
        use_first_session=payload.use_first_session,
        sold_at=resolve_moment(payload.sold_at, tz) if payload.sold_at else None,
        first_session_appointment=first_visit,
        payment=(payload.payment.amount, payload.payment.method) if payload.payment else None,
    )
    return Status(201, {"patient_package": render.patient_package(sold, tz), "invoice": render.invoice(invoice, tz)})


@router.get("/patients/{patient_id}/packages", response={200: PatientPackagePage, **READ_ERRORS})
def list_patient_packages(request: HttpRequest, patient_id: Id, page: Query[PageParams]) -> dict[str, Any]:
    """Oldest sale first."""
    tz = clinic_tz()
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    found = paginate(patient_packages().filter(patient=patient), page, keys=("sold_at", "id"),
                     render=lambda pp: render.patient_package(pp, tz))
    audit_read(request, "patient.view_packages", [Shown(patient.pk, "patient", patient.pk)])
    return found


@router.get("/patient-packages/{patient_package_id}", response={200: PatientPackageOut, **READ_ERRORS})
def get_patient_package(request: HttpRequest, patient_package_id: Id) -> dict[str, Any]:
    sold = get_or_404(patient_packages(), patient_package_id, "patient package")
    audit_read(request, "patient_package.view", [Shown(sold.patient_id, "patientpackage", sold.pk)])
    return render.patient_package(sold, clinic_tz())


@router.get("/patient-packages/{patient_package_id}/ledger", response={200: LedgerPage, **READ_ERRORS})
def get_ledger(request: HttpRequest, patient_package_id: Id, page: Query[PageParams]) -> dict[str, Any]:
    """Every change of the count, oldest first: sessions_remaining == total + Σ change."""
    tz = clinic_tz()
    sold = get_or_404(PatientPackage.objects.all(), patient_package_id, "patient package")
    entries = PackageLedgerEntry.objects.filter(patient_package=sold).select_related("by")
    found = paginate(entries, page, keys=("seq", "id"), render=lambda e: render.ledger_entry(e, tz))
    audit_read(request, "patient_package.view_ledger", [Shown(sold.patient_id, "patientpackage", sold.pk)])
    return found


@router.post("/patient-packages/{patient_package_id}/cancel", response={200: PatientPackageOut, **WRITE_ERRORS})
@clinic_write
def cancel_package(request: HttpRequest, patient_package_id: Id, payload: CancelPackageIn) -> Status:
    """Rule 11: closes the package; a refund is negative, as for payments."""
    sold = get_or_404(PatientPackage.objects.all(), patient_package_id, "patient package")
    refund = (payload.refund.amount, payload.refund.method) if payload.refund else None
    sold = do_cancel_package(acting_user=viewer(request), patient_package=sold, reason=payload.reason, refund=refund)
    return Status(200, render.patient_package(sold, clinic_tz()))


@router.patch("/patient-packages/{patient_package_id}", response={200: PatientPackageOut, **WRITE_ERRORS})
@clinic_write
def set_expiry(request: HttpRequest, patient_package_id: Id, payload: ExpiryPatch) -> dict[str, Any]:
    """Owner only. A bare date means the end of that clinic-local day (rule 12)."""
    tz = clinic_tz()
    sold = get_or_404(PatientPackage.objects.all(), patient_package_id, "patient package")
    expires_at = resolve_moment(payload.expires_at, tz, bare_date_means_end=True)
    sold = do_set_expiry(acting_user=viewer(request), patient_package=sold, expires_at=expires_at)
    return render.patient_package(sold, tz)
