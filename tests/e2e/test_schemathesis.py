"""Schemathesis over the OpenAPI document against a running `tally serve`:
zero 5xx and zero responses that break the schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def post(server, path: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def seed_clinic(server, token: str) -> None:
    """A little data, so that generated ids sometimes hit real rows."""
    service = post(server, "/api/v1/services", {"name": "Acupuncture 60 min", "duration_minutes": 60,
                                                "price": "95.00"}, token)
    package = post(server, "/api/v1/packages", {"name": "10 x Acupuncture", "price": "800.00", "sessions": 10,
                                                "service_ids": [service["id"]]}, token)
    patient = post(server, "/api/v1/patients", {"first_name": "Maria", "last_name": "Lopez"}, token)
    post(server, f"/api/v1/patients/{patient['id']}/packages",
         {"package_id": package["id"], "use_first_session": False, "payment": {"amount": "400.00", "method": "card"}},
         token)
    post(server, "/api/v1/appointments", {"patient_id": patient["id"], "service_id": service["id"],
                                          "starts_at": "2026-03-04T10:00:00+00:00"}, token)


@pytest.mark.slow
def test_the_api_never_answers_5xx_and_always_matches_its_schema(live_server_process, tmp_path):
    server = live_server_process
    server.tally("createuser", "fuzz-owner", "--role", "owner", "--password", "a long fuzzing password 1")
    token = server.tally("createtoken", "fuzz-owner").stdout.strip()
    seed_clinic(server, token)
    examples = "40" if IN_CI else "12"
    # Fuzzing repeats until the time budget is spent: the budget is what bounds the run.
    budget = "60" if IN_CI else "40"
    result = subprocess.run(
        [
            SCHEMATHESIS, "run", f"{server.url}/api/v1/openapi.json",
            "--checks", "not_a_server_error,response_schema_conformance",
            "-H", f"Authorization: Bearer {token}",
            "--max-examples", examples,
            "--phases", "examples,coverage,fuzzing",
            "--seed", "20261127",
            "--workers", "2",
            "--generation-database", "none",
            "--request-timeout", "30",
            "--max-time", budget,
            "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
    assert result.returncode == 0, output[-15000:] + "\n--- server log ---\n" + log[-5000:]
