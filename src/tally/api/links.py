"""OpenAPI links: which answer feeds which operation (an extension of API.md's contract).

A link says "the `id` in this 201 is the `patient_id` of those operations", so a client
(or a stateful fuzzer such as Schemathesis) can walk the API the way the front desk does:
register a patient, sell a package, book, check in, pay, void, investigate and fix.
The table names operations by method and path, as API.md does; `add_links` turns it into
`links` on the documented responses, naming each target by its operationId.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any] | str


@dataclass(frozen=True)
class Link:
    source: str  # "POST /patients 201"
    name: str
    target: str  # "GET /patients/{patient_id}"
    parameters: dict[str, str] = field(default_factory=dict)
    body: Body | None = None
    replace_body: bool = False  # the body is the whole request (a finding's fix), not fields merged in

    def definition(self, operation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": operation_id}
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        if self.body is not None:
            out["requestBody"] = self.body
        if self.replace_body:
            out["x-schemathesis"] = {"merge_body": False}
        return out


def _id(pointer: str = "id") -> str:
    return f"$response.body#/{pointer}"


def _from_patient(source: str, pointer: str) -> list[Link]:
    """Everything that takes a patient id."""
    patient = {"path.patient_id": _id(pointer)}
    return [
        Link(source, "GetPatient", "GET /patients/{patient_id}", patient),
        Link(source, "SellPackage", "POST /patients/{patient_id}/packages", patient),
        Link(source, "PatientPackages", "GET /patients/{patient_id}/packages", patient),
        Link(source, "PatientAppointments", "GET /patients/{patient_id}/appointments", patient),
        Link(source, "PatientInvoices", "GET /patients/{patient_id}/invoices", patient),
        Link(source, "InvestigatePatient", "GET /patients/{patient_id}/investigation", patient),
        Link(source, "FixPatient", "POST /patients/{patient_id}/fixes", patient),
        Link(source, "Book", "POST /appointments", body={"patient_id": _id(pointer)}),
        Link(source, "NewInvoice", "POST /invoices", body={"patient_id": _id(pointer)}),
    ]


def _from_patient_package(source: str, prefix: str) -> list[Link]:
    """Everything that takes a patient package id; and selling the same package again."""
    package = {"path.patient_package_id": _id(f"{prefix}id")}
    return [
        Link(source, "GetPatientPackage", "GET /patient-packages/{patient_package_id}", package),
        Link(source, "Ledger", "GET /patient-packages/{patient_package_id}/ledger", package),
        Link(source, "Investigate", "GET /patient-packages/{patient_package_id}/investigation", package),
        Link(source, "FixPackage", "POST /patient-packages/{patient_package_id}/fixes", package),
        Link(source, "CancelPackage", "POST /patient-packages/{patient_package_id}/cancel", package),
        Link(source, "SetExpiry", "PATCH /patient-packages/{patient_package_id}", package),
        Link(source, "SellAgain", "POST /patients/{patient_id}/packages",
             {"path.patient_id": _id(f"{prefix}patient_id")}, body={"package_id": _id(f"{prefix}package_id")}),
        Link(source, "SaleInvoice", "GET /invoices/{invoice_id}", {"path.invoice_id": _id(f"{prefix}sale_invoice_id")}),
        Link(source, "PaySale", "POST /invoices/{invoice_id}/payments",
             {"path.invoice_id": _id(f"{prefix}sale_invoice_id")}),
    ]


def _from_invoice(source: str, prefix: str) -> list[Link]:
    """Everything that takes an invoice id (and its first line)."""
    invoice = {"path.invoice_id": _id(f"{prefix}id")}
    return [
        Link(source, "GetInvoice", "GET /invoices/{invoice_id}", invoice),
        Link(source, "AddLine", "POST /invoices/{invoice_id}/lines", invoice,
             body={"service_id": _id(f"{prefix}lines/0/service_id")}),
        Link(source, "RemoveLine", "DELETE /invoices/{invoice_id}/lines/{line_id}",
             {**invoice, "path.line_id": _id(f"{prefix}lines/0/id")}),
        Link(source, "Pay", "POST /invoices/{invoice_id}/payments", invoice),
        Link(source, "Void", "POST /invoices/{invoice_id}/void", invoice),
    ]


def _from_appointment(source: str, prefix: str) -> list[Link]:
    """Everything that takes an appointment id; booking and invoicing the same visit again."""
    appointment = {"path.appointment_id": _id(f"{prefix}id")}
    return [
        Link(source, "GetAppointment", "GET /appointments/{appointment_id}", appointment),
        Link(source, "CheckIn", "POST /appointments/{appointment_id}/check-in", appointment),
        Link(source, "UndoCheckIn", "POST /appointments/{appointment_id}/undo-check-in", appointment),
        Link(source, "Cancel", "POST /appointments/{appointment_id}/cancel", appointment),
        Link(source, "NoShow", "POST /appointments/{appointment_id}/no-show", appointment),
        Link(source, "UndoCancel", "POST /appointments/{appointment_id}/undo-cancel", appointment),
        Link(source, "UndoNoShow", "POST /appointments/{appointment_id}/undo-no-show", appointment),
        Link(source, "Delete", "DELETE /appointments/{appointment_id}", appointment),
        Link(source, "BookAgain", "POST /appointments",
             body={"patient_id": _id(f"{prefix}patient_id"), "service_id": _id(f"{prefix}service_id"),
                   "starts_at": _id(f"{prefix}starts_at")}),
        Link(source, "InvoiceVisit", "POST /invoices",
             body={"patient_id": _id(f"{prefix}patient_id"),
                   "lines": [{"service_id": _id(f"{prefix}service_id"), "appointment_id": _id(f"{prefix}id")}]}),
        Link(source, "VisitPatient", "GET /patients/{patient_id}", {"path.patient_id": _id(f"{prefix}patient_id")}),
    ]


LINKS: list[Link] = [
    # Catalog
    Link("POST /services 201", "EditService", "PATCH /services/{service_id}", {"path.service_id": _id()}),
    Link("POST /services 201", "PackageOfService", "POST /packages", body={"service_ids": [_id()]}),
    Link("GET /services 200", "EditService", "PATCH /services/{service_id}", {"path.service_id": _id("items/0/id")}),
    Link("POST /packages 201", "EditPackage", "PATCH /packages/{package_id}", {"path.package_id": _id()}),
    Link("GET /packages 200", "EditPackage", "PATCH /packages/{package_id}", {"path.package_id": _id("items/0/id")}),
    # Patients
    *_from_patient("POST /patients 201", "id"),
    *_from_patient("GET /patients/{patient_id} 200", "id"),
    *_from_patient("GET /patients 200", "items/0/id"),
    # Packages sold
    *_from_patient_package("POST /patients/{patient_id}/packages 201", "patient_package/"),
    *_from_invoice("POST /patients/{patient_id}/packages 201", "invoice/"),
    *_from_patient_package("GET /patients/{patient_id}/packages 200", "items/0/"),
    *_from_patient_package("GET /patient-packages/{patient_package_id} 200", ""),
    *_from_patient_package("POST /patient-packages/{patient_package_id}/cancel 200", ""),
    *_from_patient_package("PATCH /patient-packages/{patient_package_id} 200", ""),
    # Appointments
    *_from_appointment("POST /appointments 201", ""),
    *_from_appointment("GET /appointments/{appointment_id} 200", ""),
    *_from_appointment("GET /appointments 200", "items/0/"),
    *_from_appointment("GET /patients/{patient_id}/appointments 200", "items/0/"),
    *_from_appointment("POST /appointments/{appointment_id}/check-in 200", "appointment/"),
    *_from_invoice("POST /appointments/{appointment_id}/check-in 200", "invoice/"),
    *_from_appointment("POST /appointments/{appointment_id}/undo-check-in 200", ""),
    *_from_appointment("POST /appointments/{appointment_id}/cancel 200", ""),
    *_from_appointment("POST /appointments/{appointment_id}/no-show 200", ""),
    *_from_appointment("POST /appointments/{appointment_id}/undo-cancel 200", ""),
    *_from_appointment("POST /appointments/{appointment_id}/undo-no-show 200", ""),
    Link("DELETE /appointments/{appointment_id} 204", "GetDeleted", "GET /appointments/{appointment_id}",
         {"path.appointment_id": "$request.path.appointment_id"}),
    # Invoices
    *_from_invoice("POST /invoices 201", ""),
    *_from_invoice("GET /invoices/{invoice_id} 200", ""),
    *_from_invoice("GET /patients/{patient_id}/invoices 200", "items/0/"),
    *_from_invoice("POST /invoices/{invoice_id}/void 200", ""),
    Link("POST /invoices/{invoice_id}/lines 201", "RemoveLine", "DELETE /invoices/{invoice_id}/lines/{line_id}",
         {"path.invoice_id": "$request.path.invoice_id", "path.line_id": _id()}),
    Link("POST /invoices/{invoice_id}/lines 201", "GetInvoice", "GET /invoices/{invoice_id}",
         {"path.invoice_id": "$request.path.invoice_id"}),
    Link("POST /invoices/{invoice_id}/payments 201", "GetInvoice", "GET /invoices/{invoice_id}",
         {"path.invoice_id": "$request.path.invoice_id"}),
    Link("POST /invoices/{invoice_id}/payments 201", "Void", "POST /invoices/{invoice_id}/void",
         {"path.invoice_id": "$request.path.invoice_id"}),
    Link("POST /invoices/{invoice_id}/payments 201", "Pay", "POST /invoices/{invoice_id}/payments",
         {"path.invoice_id": "$request.path.invoice_id"}),
    Link("DELETE /invoices/{invoice_id}/lines/{line_id} 204", "GetInvoice", "GET /invoices/{invoice_id}",
         {"path.invoice_id": "$request.path.invoice_id"}),
    # The investigator: a finding's fix is posted as it is (API.md "Fix actions")
    Link("GET /patient-packages/{patient_package_id}/investigation 200", "ApplyFix",
         "POST /patient-packages/{patient_package_id}/fixes",
         {"path.patient_package_id": "$request.path.patient_package_id"},
         body="$response.body#/findings/0/fix", replace_body=True),
    Link("GET /patients/{patient_id}/investigation 200", "ApplyFix", "POST /patients/{patient_id}/fixes",
         {"path.patient_id": "$request.path.patient_id"}, body="$response.body#/findings/0/fix", replace_body=True),
    Link("GET /patients/{patient_id}/investigation 200", "ApplyPackageFix",
         "POST /patient-packages/{patient_package_id}/fixes",
         {"path.patient_package_id": _id("packages/0/summary/id")},
         body="$response.body#/packages/0/findings/0/fix", replace_body=True),
    Link("POST /patient-packages/{patient_package_id}/fixes 200", "Ledger",
         "GET /patient-packages/{patient_package_id}/ledger",
         {"path.patient_package_id": "$request.path.patient_package_id"}),
    Link("GET /audit/packages 200", "Investigate", "GET /patient-packages/{patient_package_id}/investigation",
         {"path.patient_package_id": _id("items/0/patient_package_id")}),
    # Staff
    Link("GET /staff 200", "BookWith", "POST /appointments", body={"practitioner_id": _id("items/0/id")}),
]


def add_links(schema: dict[str, Any], prefix: str, links: list[Link] = LINKS) -> None:
    """Put each link on its source response. An unknown operation is a mistake in the table."""
    paths = schema["paths"]

    def operation(spec: str) -> dict[str, Any]:
        method, path = spec.split(" ", 1)
        try:
            return paths[prefix + path][method.lower()]
        except KeyError:
            raise LookupError(f"OpenAPI links: no operation {spec}") from None

    for link in links:
        source, status = link.source.rsplit(" ", 1)
        responses = operation(source)["responses"]
        response = responses.get(int(status), responses.get(status))
        if response is None:
            raise LookupError(f"OpenAPI links: {source} documents no {status}")
        named = response.setdefault("links", {})
        if link.name in named:
            raise LookupError(f"OpenAPI links: two links named {link.name} on {link.source}")
        named[link.name] = link.definition(operation(link.target)["operationId"])
