import datetime as dt
from decimal import Decimal

from tally.clinic.actions import billing, sales, visits
from tally.clinic.ledger import verify


def test_a_paid_package_covers_a_checked_in_visit(desk, patient, ten_pack, acu60):
    pp, inv = sales.do_sell_package(acting_user=desk, patient=patient, package=ten_pack, use_first_session=False,
                                    payment=(Decimal("800.00"), "card"))
    assert pp.activated_at is not None
    appt = visits.do_book(acting_user=desk, patient=patient, service=acu60,
                          starts_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    appt, invoice, line = visits.do_check_in(acting_user=desk, appointment=appt)
    assert line.covered_by_id == pp.pk
    pp.refresh_from_db()
    assert pp.sessions_used == 1
    visits.do_undo_check_in(acting_user=desk, appointment=appt)
    pp.refresh_from_db()
    assert pp.sessions_used == 0
    assert verify() == []
    _ = billing
