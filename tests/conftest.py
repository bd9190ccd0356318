"""Shared fixtures: a small clinic with the three roles, a catalog and a patient."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest
from django.db import connection

from tally.clinic import triggers
from tally.clinic.actions import catalog
from tally.clinic.models import ClinicSettings, Staff

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def owners_sign_in_without_two_factor(settings):
    """Owners must use two-factor sign-in by default (TALLY_OWNER_2FA_REQUIRED); tests elsewhere
    sign owners in with a password or force_login, so it is off for them. tests/security switches
    it back on and checks the requirement."""
    settings.TALLY_OWNER_2FA_REQUIRED = False


@pytest.fixture
def owner(db) -> Staff:
    return Staff.objects.create_user("olivia", password="correct horse battery staple", role="owner",
                                     first_name="Olivia", last_name="Owner")


@pytest.fixture
def desk(db) -> Staff:
    return Staff.objects.create_user("frank", password="correct horse battery staple", role="front_desk",
                                     first_name="Frank", last_name="Desk")


@pytest.fixture
def practitioner(db) -> Staff:
    return Staff.objects.create_user("pat", password="correct horse battery staple", role="practitioner",
                                     first_name="Pat", last_name="Needle")


@pytest.fixture
def other_practitioner(db) -> Staff:
    return Staff.objects.create_user("quinn", password="correct horse battery staple", role="practitioner",
                                     first_name="Quinn", last_name="Hands")


@pytest.fixture
def clinic(db) -> ClinicSettings:
    settings = ClinicSettings.load()
    settings.name = "Test Clinic"
    settings.time_zone = "America/New_York"
    settings.save()
    return settings


@pytest.fixture
def acu60(owner):
    return catalog.do_create_service(acting_user=owner, name="Acupuncture 60 min", duration_minutes=60,
                                     price=Decimal("95.00"))


@pytest.fixture
def acu90(owner):
    return catalog.do_create_service(acting_user=owner, name="Acupuncture 90 min", duration_minutes=90,
                                     price=Decimal("130.00"))


@pytest.fixture
def ten_pack(owner, acu60):
    return catalog.do_create_package(acting_user=owner, name="10 x Acupuncture 60", price=Decimal("800.00"),
                                     sessions=10, service_ids=[acu60.pk])


@pytest.fixture
def patient(desk, clinic):
    return catalog.do_create_patient(acting_user=desk, first_name="Maria", last_name="Lopez",
                                     date_of_birth=dt.date(1980, 4, 2), email="maria@example.com")


@pytest.fixture
def triggers_off_for_flush(transactional_db):
    """The flush after a transactional test empties every table, which the append-only triggers
    refuse (SQLite's DELETE, PostgreSQL's TRUNCATE): drop them for the flush and put them back
    before the next one. Every transactional test uses it."""
    triggers.install(connection)
    yield
    triggers.uninstall(connection)


# --- Tests that belong to one database only are deselected on the other, not skipped ---


def _run_vendor() -> str:
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    return "postgresql" if "postgresql" in engine else "sqlite"


def pytest_collection_modifyitems(config, items):
    vendor = _run_vendor()
    keep, drop = [], []
    for item in items:
        if item.get_closest_marker("postgres_only") and vendor != "postgresql":
            drop.append(item)
        elif item.get_closest_marker("sqlite_only") and vendor != "sqlite":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- CI policy: under CI=true a skipped test is a failure (PostgreSQL and Chromium are required) ---

_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if IN_CI and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if IN_CI and _skipped:
        terminalreporter.write_line(f"CI=true: {len(_skipped)} skipped test(s) count as failures:", red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)
