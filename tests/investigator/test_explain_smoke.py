import datetime as dt
from decimal import Decimal

from tally.clinic.actions import billing, sales, visits
from tally.clinic.investigator.explain import explain
from tally.clinic.investigator.loader import load_history

UTC = dt.UTC


def at(day, hour=10):
    return dt.datetime(2026, 3, day, hour, tzinfo=UTC) + dt.timedelta(hours=5)


def codes(findings):
    return sorted(f.code for f in findings)


def test_wrong_service_and_unpaid_and_no_charges_are_named(desk, patient, ten_pack, acu60, acu90, practitioner):
    pp, sale = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                     sold_at=at(2), payment=(Decimal("400.00"), "card"))
    a1 = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=at(3))
    visits.do_check_in(acting_user=desk, appointment=a1)  # unpaid
    billing.do_record_payment(acting_user=desk, invoice=sale, amount="400.00", method="card", received_at=at(4))
    a2 = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=at(5))
    visits.do_check_in(acting_user=desk, appointment=a2, service=acu90)  # wrong service
    a3 = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=at(6))
    visits.do_check_in(acting_user=desk, appointment=a3, no_charges=True)
    a4 = visits.do_book(acting_user=desk, patient=patient, service=acu60, starts_at=at(7))
    visits.do_check_in(acting_user=desk, appointment=a4)  # counted
    investigations, orphans = explain(load_history(patient.pk))
    inv = investigations[pp.pk]
    assert codes(inv.findings) == ["NO_CHARGES", "PACKAGE_NOT_PAID", "SERVICE_NOT_IN_PACKAGE"]
    assert inv.summary["sessions_used"] == 1
    visits_in_timeline = [e for e in inv.timeline if e["kind"] == "visit"]
    assert [e["counted"] for e in visits_in_timeline] == [False, False, False, True]
    assert orphans == []
    wrong = next(f for f in inv.findings if f.code == "SERVICE_NOT_IN_PACKAGE")
    assert wrong.fix == {"action": "apply_to_line", "params": {"line_id": wrong.line_id, "service_id": acu60.pk}}
    assert "Acupuncture 90 min" in wrong.message and "Acupuncture 60 min" in wrong.message
