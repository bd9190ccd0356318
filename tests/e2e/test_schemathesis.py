"""Schemathesis over the OpenAPI document against a running `tally serve`: zero 5xx and zero
responses that break the schema, first operation by operation, then statefully (scenarios
that follow the document's links: register, sell, book, check in, pay, void, investigate,
fix). After each run, `tally verify` re-derives every package from its ledger and checks
every invoice: nothing the fuzzer did may leave a package inconsistent or an invoice torn."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, running_server, scratch_database_url

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
FUZZ_PASSWORD = "a long fuzzing password 1"


def call(server, method: str, path: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path, data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def post(server, path: str, body: dict, token: str) -> dict:
    return call(server, "POST", path, token, body)


def seed_clinic(server, token: str) -> dict[str, list]:
    """A little data, so that generated ids sometimes hit real rows; returns the ids by kind."""
    today = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    services = [post(server, "/api/v1/services", {"name": name, "duration_minutes": minutes, "price": price}, token)
                for name, minutes, price in [("Acupuncture 60 min", 60, "95.00"), ("Acupuncture 90 min", 90, "130.00"),
                                             ("Massage 45 min", 45, "70.00"), ("Cupping 30 min", 30, "50.00")]]
    service_ids = [s["id"] for s in services]
    packages = [
        post(server, "/api/v1/packages", {"name": "10 x Acupuncture", "price": "800.00", "sessions": 10,
                                          "service_ids": service_ids[:2]}, token),
        post(server, "/api/v1/packages", {"name": "3 x Massage, 90 days", "price": "180.00", "sessions": 3,
                                          "service_ids": service_ids[2:], "valid_days": 90}, token),
    ]
    patients = [post(server, "/api/v1/patients", {"first_name": first, "last_name": last}, token)
                for first, last in [("Maria", "Lopez"), ("Sam", "Okafor")]]
    staff = [person["id"] for person in call(server, "GET", "/api/v1/staff", token)["items"]]
    appointments = []
    for patient, package, service, paid in zip(patients, packages, service_ids[::2], ["400.00", "180.00"], strict=True):
        post(server, f"/api/v1/patients/{patient['id']}/packages",
             {"package_id": package["id"], "use_first_session": False, "payment": {"amount": paid, "method": "card"}},
             token)
        for starts_at in ["2026-03-04T10:00:00+00:00", today.isoformat()]:
            appointments.append(post(server, "/api/v1/appointments", {
                "patient_id": patient["id"], "service_id": service, "starts_at": starts_at}, token))
    return {
        "patients": [p["id"] for p in patients], "services": service_ids, "packages": [p["id"] for p in packages],
        "staff": staff, "appointments": [a["id"] for a in appointments],
        "moments": ["2026-03-04T10:00:00+00:00", today.isoformat(), (today - dt.timedelta(days=3)).date().isoformat(),
                    (today + dt.timedelta(days=2)).isoformat()],
    }


# Real values for the fields that name or shape a row, so that a good share of the generated
# requests (and of the stateful scenarios' first steps) get past validation and change the clinic.
BODY_BINDINGS = {
    "body.patient_id": "patients", "body.service_id": "services", "body.service_ids[*]": "services",
    "body.lines[*].service_id": "services", "body.package_id": "packages", "body.practitioner_id": "staff",
    "body.starts_at": "moments", "body.issued_at": "moments", "body.received_at": "moments",
    "body.duration_minutes": "minutes", "body.price": "money", "body.amount": "money",
    "body.payment.amount": "money", "body.sessions": "sessions",
    "path.patient_id": "patients", "path.appointment_id": "appointments",
}


def stateful_config(ids: dict[str, list]) -> str:
    """schemathesis.toml for the stateful phase: dictionaries of real values, and only the
    document's own links (its dependency inference would add hundreds of guessed ones and
    spread the time budget thin)."""
    dictionaries = ids | {"minutes": [30, 60, 90], "money": ["95.00", "400.00", "0.01", "800.00"],
                          "sessions": [1, 5, 10]}
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.7 }}' for key, name in BODY_BINDINGS.items()]
    lines += ["[phases.stateful]", "max-steps = 10",
              "[phases.stateful.inference]", 'algorithms = ["location-headers"]']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory) -> Iterator[tuple[Server, str, dict[str, list], Path]]:
    """One server for both runs: the stateful scenarios start from what the first run left."""
    tmp_path = tmp_path_factory.mktemp("schemathesis")
    with scratch_database_url(tmp_path) as url, running_server(tmp_path, url) as server:
        server.tally("createuser", "fuzz-owner", "--role", "owner", "--password", FUZZ_PASSWORD)
        server.tally("createuser", "fuzz-needles", "--role", "practitioner", "--password", FUZZ_PASSWORD)
        token = server.tally("createtoken", "fuzz-owner").stdout.strip()
        ids = seed_clinic(server, token)
        yield server, token, ids, tmp_path / "server.log"


def run_schemathesis(fuzzed_server, tmp_path: Path, *args: str, config: Path | None = None,
                     hooks: Path | None = None) -> None:
    server, token, _, log_file = fuzzed_server
    env = {**os.environ, **({"SCHEMATHESIS_HOOKS": str(hooks)} if hooks else {})}
    result = subprocess.run(
        [
            SCHEMATHESIS, *(["--config-file", str(config)] if config else []),
            "run", f"{server.url}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--seed", "20261127",
            # One worker: CPython 3.11.7 (this venv) can fail ast.parse in concurrent threads
            # (gh-106905), which Hypothesis calls when it describes a filter.
            "--workers", "1",
            "--generation-database", "none",
            "--request-timeout", "30",
            "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
            # Signing out revokes the fuzzer's own token: every later request would be a 401 and
            # test nothing. tests/security/test_token_revocation.py covers it.
            "--exclude-path-regex", "/auth/sign-out$",
            *args,
        ],
        capture_output=True, text=True, timeout=600, env=env,
    )
    output = result.stdout + result.stderr
    log = log_file.read_text() if log_file.exists() else ""
    assert result.returncode == 0, output[-15000:] + "\n--- server log ---\n" + log[-5000:]


def assert_every_package_consistent(server: Server) -> None:
    verify = server.tally("verify", check=False)
    assert verify.returncode == 0, f"tally verify after fuzzing:\n{verify.stdout}\n{verify.stderr}"
    assert verify.stdout.startswith("OK: "), verify.stdout


@pytest.mark.slow
def test_the_api_never_answers_5xx_and_always_matches_its_schema(fuzzed_server, tmp_path):
    # Fuzzing repeats until the time budget is spent: the budget is what bounds the run.
    run_schemathesis(
        fuzzed_server, tmp_path,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", "40" if IN_CI else "12",
        "--phases", "examples,coverage,fuzzing",
        "--max-time", "40" if IN_CI else "30",
    )
    assert_every_package_consistent(fuzzed_server[0])


@pytest.mark.slow
def test_stateful_scenarios_along_the_links_leave_every_package_consistent(fuzzed_server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(stateful_config(fuzzed_server[2]))
    run_schemathesis(
        fuzzed_server, tmp_path,
        "--checks", "not_a_server_error,response_schema_conformance,use_after_free,ensure_resource_availability",
        "--phases", "stateful", "--mode", "positive",
        "--max-time", "35" if IN_CI else "30",
        config=config, hooks=Path(__file__).with_name("schemathesis_hooks.py"),
    )
    assert_every_package_consistent(fuzzed_server[0])
