"""Patients: register, search by name or number, read a chart."""

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from pydantic import Field

from tally.clinic.actions.catalog import do_create_patient
from tally.clinic.models import Patient
from tally.clinic.queries import search_patients

from .. import render
from ..idempotency import clinic_write
from ..lookups import get_or_404, viewer
from ..pagination import paginate
from ..reads import Shown, audit_page, audit_read
from ..schemas import READ_ERRORS, WRITE_ERRORS, PageParams, PatientIn, PatientOut, PatientPage
from ..types import STORABLE, Id

router = Router(tags=["patients"])

# Validated like every text field (no NUL, valid Unicode), so a bad query is a 422.
SearchText = Annotated[str, Field(max_length=200), STORABLE]


@router.post("/patients", response={201: PatientOut, **WRITE_ERRORS})
@clinic_write
def create_patient(request: HttpRequest, payload: PatientIn) -> Status:
    patient = do_create_patient(acting_user=viewer(request), **payload.model_dump())
    return Status(201, render.patient(patient))


@router.get("/patients", response={200: PatientPage, **READ_ERRORS})
def list_patients(request: HttpRequest, page: Query[PageParams], q: SearchText | None = None) -> dict[str, Any]:
    """By last name, then first name; `q` matches every word of a name, or a patient number."""
    patients = search_patients(q or None)
    found = paginate(patients, page, keys=("last_name", "first_name", "id"), render=render.patient)
    return audit_page(request, "patient.list", found, "patient", patient_key="id", details={"q": q} if q else None)


@router.get("/patients/{patient_id}", response={200: PatientOut, **READ_ERRORS})
def get_patient(request: HttpRequest, patient_id: Id) -> dict[str, Any]:
    patient = get_or_404(Patient.objects.all(), patient_id, "patient")
    audit_read(request, "patient.view", [Shown(patient.pk, "patient", patient.pk)])
    return render.patient(patient)
