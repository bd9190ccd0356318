"""A clinic that ran an early release for a year, upgraded by `tally init`.

The early release is the schema at clinic 0002 (no audit hash chain, no token origin or expiry,
no invoice line `sessions_left`, no signed-in sessions table). Its data is a year of the demo
clinic (patients, sales, check-ins, payments, refunds, tombstones, audit events), taken back to
0002 one data migration at a time (each undo must work), plus what that release itself wrote
there: audit events without a hash, API tokens without an origin or an expiry. Then `tally init`
runs every migration forward on it: the data survives, `tally verify` and `tally verify-audit`
pass, and `tally serve` serves it. On a scratch database of the run's kind (SQLite or PostgreSQL).
"""

from __future__ import annotations

import json

from tests.e2e.conftest import scratch_database_url

from .conftest import Client, ServerProcess, create_owner_token, run_tally, tally_env

# The demo corrupts one cached count on purpose (its LEDGER_MISMATCH patient); a clinic being
# upgraded verifies, so put that count back to what its ledger says first.
REPAIR_DEMO = """
from django.db import connection
from tally.clinic.models import PatientPackage
with connection.cursor() as cursor:
    for package in PatientPackage.objects.all():
        last = package.ledger_entries.order_by("-seq").first()
        used = last.used_after if last else 0
        if package.sessions_used != used:
            cursor.execute("UPDATE clinic_patientpackage SET sessions_used = %s WHERE id = %s", [used, package.pk])
"""

SNAPSHOT = """
import json
from tally.clinic import models
names = ["Patient", "Appointment", "Invoice", "InvoiceLine", "Payment", "PackageLedgerEntry", "PatientPackage",
         "Tombstone", "AuditEvent", "ApiToken", "Staff", "Service", "Package"]
print(json.dumps({
    "counts": {name: getattr(models, name)._base_manager.count() for name in names},
    "sessions_left": {str(pk): left for pk, left in models.InvoiceLine._base_manager.values_list("id", "sessions_left")},
    "sessions_used": {str(pk): used for pk, used in models.PatientPackage.objects.values_list("id", "sessions_used")},
    "ledger": [list(row) for row in models.PackageLedgerEntry.objects.order_by("id").values_list(
        "id", "patient_package_id", "seq", "kind", "change", "used_after")],
    "payments": [str(amount) for amount in models.Payment.objects.order_by("id").values_list("amount", flat=True)],
    "tokens": {label: [origin, expires is not None] for label, origin, expires in
               models.ApiToken.objects.values_list("label", "origin", "expires_at")},
}))
"""

# What the early release wrote, in its own columns: POST /auth/token labelled its tokens "api";
# any other label came from the command line. Audit events had no hash.
OLD_RELEASE_WRITES = """
import datetime as dt, hashlib, json
from django.db import connection
def stamp(hours_ago):
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
with connection.cursor() as cursor:
    cursor.execute("SELECT id FROM clinic_staff WHERE username = 'fault-owner'")
    owner = cursor.fetchone()[0]
    cursor.execute("SELECT MIN(id) FROM clinic_patient")
    patient = cursor.fetchone()[0]
    for label, raw, hours_ago in [("api", "old-signed-in-two-days-ago", 48), ("api", "old-signed-in-an-hour-ago", 1),
                                  ("nightly export", "old-cron-token", 24 * 30)]:
        cursor.execute("INSERT INTO clinic_apitoken (token_hash, label, created_at, revoked_at, staff_id) "
                       "VALUES (%s, %s, %s, NULL, %s)", [hashlib.sha256(raw.encode()).hexdigest(), label,
                                                         stamp(hours_ago), owner])
    for n in range(3):
        cursor.execute("INSERT INTO clinic_auditevent (at, role, action, object_type, object_id, before, after, ip, "
                       "actor_id, patient_id) VALUES (%s, 'owner', 'patient.update', 'patient', %s, NULL, %s, "
                       "'127.0.0.1', %s, %s)", [stamp(0.5 - n * 0.1), str(patient), json.dumps({"phone": f"555-010{n}"}),
                                                owner, patient])
"""

DATA_MIGRATIONS_UNDONE = ["0008", "0007", "0006", "0005", "0004", "0003", "0002"]

# `tally migrate clinic <target>` for each target in turn, then `tally migrate security zero`,
# in one process (a process per undo started Django and ran its checks seven times over): each
# undo is its own migrate command and commits before the next starts; the first that fails
# stops the script with its traceback and a non-zero exit.
UNDO_ONE_AT_A_TIME = f"""
from django.core.management import call_command
for target in {DATA_MIGRATIONS_UNDONE!r}:
    call_command("migrate", "clinic", target, verbosity=0)
    print("undone to", target, flush=True)
call_command("migrate", "security", "zero", verbosity=0)
"""


def snapshot(env: dict[str, str]) -> dict:
    return json.loads(run_tally(env, "shell", "-c", SNAPSHOT).stdout.strip().splitlines()[-1])


def test_an_early_release_clinic_with_a_years_data_upgrades_verifies_and_serves(tmp_path, static_root):
    with scratch_database_url(tmp_path) as url:
        env = tally_env(url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        run_tally(env, "demo", "--no-serve", timeout=600)
        token = create_owner_token(env)
        run_tally(env, "shell", "-c", REPAIR_DEMO)
        assert run_tally(env, "verify", check=False).returncode == 0
        before = snapshot(env)
        assert before["counts"]["Tombstone"] > 0 and any(amount.startswith("-") for amount in before["payments"])

        # Back to the early release, one migration at a time: every undo works on real data.
        undone = run_tally(env, "shell", "-c", UNDO_ONE_AT_A_TIME, check=False)
        assert undone.returncode == 0 and "Traceback" not in undone.stderr, (undone.stdout, undone.stderr)
        assert [line for line in undone.stdout.splitlines() if line.startswith("undone to ")] == [
            f"undone to {target}" for target in DATA_MIGRATIONS_UNDONE], undone.stdout
        run_tally(env, "shell", "-c", OLD_RELEASE_WRITES)

        waiting = run_tally(env, "showmigrations", "clinic", "security").stdout
        for name in ("0003_audit_hash_chain", "0006_apitoken_origin", "0007_invoice_line_sessions_left",
                     "0008_apitoken_expires_at", "0009_audit_chain_keyed", "0001_signed_in_sessions"):
            assert f"[ ] {name}" in waiting, waiting
        run_tally(env, "init", timeout=600)
        applied = run_tally(env, "showmigrations").stdout
        assert "[ ]" not in applied and "[X] 0009_audit_chain_keyed" in applied, applied

        verified = run_tally(env, "verify", check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        chained = run_tally(env, "verify-audit", check=False)
        assert chained.returncode == 0 and "chain intact" in chained.stdout, chained.stdout + chained.stderr

        after = snapshot(env)
        # The clinic's data is as it was; 0007 filled in every line's sessions_left as the release had it.
        for table in ("Patient", "Appointment", "Invoice", "InvoiceLine", "Payment", "PackageLedgerEntry",
                      "PatientPackage", "Tombstone", "Staff", "Service", "Package"):
            assert after["counts"][table] == before["counts"][table], table
        for key in ("sessions_left", "sessions_used", "ledger", "payments"):
            assert after[key] == before[key], key
        # The old release's 3 events, the undo's audit.unkeyed and the upgrade's audit.rekeyed, chained.
        assert after["counts"]["AuditEvent"] == before["counts"]["AuditEvent"] + 5
        # 0006 and 0008: tokens from POST /auth/token expire 12 hours after they were issued; others never.
        assert after["tokens"]["api"] == ["password", True]
        assert after["tokens"]["nightly export"] == ["command_line", False]
        assert after["tokens"]["command line"] == ["command_line", False]

        server = ServerProcess(tmp_path, env)
        try:
            server.start()
            owner = Client(server, token)
            assert owner.call("GET", "/api/v1/me").status == 200
            patients = owner.ok("GET", "/api/v1/patients?q=")["items"]
            assert patients
            assert owner.call("GET", f"/api/v1/patients/{patients[0]['id']}/investigation").status == 200
            audit_log = owner.ok("GET", f"/api/v1/audit-log?patient_id={patients[0]['id']}")["items"]
            assert audit_log
            assert owner.call("GET", "/api/v1/audit/packages").status == 200
            assert Client(server, "old-cron-token").call("GET", "/api/v1/me").status == 200
            assert Client(server, "old-signed-in-an-hour-ago").call("GET", "/api/v1/me").status == 200
            expired = Client(server, "old-signed-in-two-days-ago").call("GET", "/api/v1/me")
            assert expired.status == 401, expired
        finally:
            server.stop()
