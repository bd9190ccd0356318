"""The clinic audit lists packages in one "worst first" order on the web page, in the API and in
`tally audit` (README, "Additions to the API contract")."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from decimal import Decimal

from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from tally.clinic.actions import catalog, sales, visits

NY = dt.timezone(dt.timedelta(hours=-5))


def sold(desk, patient, package, day):
    pp, _ = sales.do_sell_package(acting_user=desk, patient=patient, package=package, use_first_session=False,
                                  sold_at=dt.datetime(2026, 3, day, 9, tzinfo=NY),
                                  payment=(str(package.price), "card"))
    return pp


def seen(desk, patient, service, day, **check_in):
    appointment = visits.do_book(acting_user=desk, patient=patient, service=service,
                                 starts_at=dt.datetime(2026, 3, day, 10, tzinfo=NY))
    visits.do_check_in(acting_user=desk, appointment=appointment, **check_in)


def test_the_page_the_api_and_the_command_line_list_the_same_packages_worst_first(
        desk, owner, acu60, clinic, desk_api, client):
    two = catalog.do_create_package(acting_user=owner, name="2 x Acupuncture", price=Decimal("150.00"), sessions=2,
                                    service_ids=[acu60.pk])
    people = [catalog.do_create_patient(acting_user=desk, first_name=n, last_name="Audit") for n in "ABC"]
    # A: one missed step and two visits after the last session (rules working as designed).
    used_up = sold(desk, people[0], two, 1)
    for day in (2, 3, 4, 5):
        seen(desk, people[0], acu60, day)
    seen(desk, people[0], acu60, 6, no_charges=True)
    # B: two missed steps.
    missed = sold(desk, people[1], two, 1)
    seen(desk, people[1], acu60, 2, no_charges=True)
    seen(desk, people[1], acu60, 3, no_charges=True)
    # C: an integrity fault.
    broken = sold(desk, people[2], two, 1)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clinic_patientpackage SET sessions_used = 1 WHERE id = %s", [broken.pk])
    expected = [broken.pk, missed.pk, used_up.pk]

    api = desk_api.get("/audit/packages", min_severity="info").json()
    assert [item["patient_package_id"] for item in api["items"]] == expected
    out = io.StringIO()
    call_command("audit", "--json", "--min-severity", "info", stdout=out)
    assert [item["patient_package_id"] for item in json.loads(out.getvalue())["items"]] == expected
    client.force_login(desk)
    page = client.get(reverse("staff:audit"), {"severity": "info"}).content.decode()
    links = [int(pk) for pk in re.findall(r'href="[^"]*/packages/(\d+)/investigation/">Investigate', page)]
    assert links == expected
