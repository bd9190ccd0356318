from .audit import AuditEvent, ClinicAuditSnapshot, IdempotencyRecord
from .billing import Invoice, InvoiceLine, Payment
from .catalog import Package, Service
from .clinic import ClinicSettings
from .ledger import PackageLedgerEntry
from .packages import PatientPackage
from .patients import Patient
from .scheduling import Appointment, Tombstone
from .staff import ApiToken, Staff

__all__ = [
    "ApiToken",
    "Appointment",
    "AuditEvent",
    "ClinicAuditSnapshot",
    "ClinicSettings",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceLine",
    "Package",
    "PackageLedgerEntry",
    "Patient",
    "PatientPackage",
    "Payment",
    "Service",
    "Staff",
    "Tombstone",
]
