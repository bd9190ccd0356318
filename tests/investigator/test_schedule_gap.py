"""SCHEDULE_GAP exactly as SPEC.md words it: at least three visits; a gap of at least 2.5× the
median interval between them AND at least 14 days; no record of any kind inside it; info, and
a warning only when expected_used exceeds the count."""

from __future__ import annotations

import datetime as dt

from tally.clinic.actions import visits


def gaps(history, pp, expected_used=None):
    investigation, orphans = history.investigate(pp, expected_used=expected_used)
    return [f for f in investigation.findings + orphans if f.code == "SCHEDULE_GAP"]


def visits_on(history, *days):
    for day in days:
        history.visit(*divmod_day(day))


def divmod_day(day: int) -> tuple[int, int]:
    """Day of 2026 (1 = 1 January) as (month, day)."""
    date = dt.date(2026, 1, 1) + dt.timedelta(days=day - 1)
    return date.month, date.day


def test_fourteen_days_after_a_rhythm_of_four_is_a_gap_and_thirteen_is_not(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 14, 18, 22, 36)  # intervals 4, 4, 4, 14: median 4, 2.5 × 4 = 10 ≤ 14
    (gap,) = gaps(history, pp)
    assert (gap.date, gap.until) == (dt.date(2026, 1, 22), dt.date(2026, 2, 5))
    assert gap.severity == "info" and gap.fix is None
    assert "22 Jan 2026" in gap.message and "5 Feb 2026" in gap.message and "(14 days)" in gap.message


def test_a_gap_under_fourteen_days_is_no_gap_however_regular_the_rhythm(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 12, 14, 16, 29)  # 13 days ≥ 2.5 × 2 but < 14
    assert gaps(history, pp) == []


def test_a_gap_under_two_and_a_half_intervals_is_no_gap(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 24, 38, 52, 80)  # 28 days ≥ 14 but < 2.5 × 14 = 35
    assert gaps(history, pp) == []


def test_two_visits_are_no_rhythm(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 100)
    assert gaps(history, pp) == []


def test_any_record_inside_explains_the_gap(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 17, 24, 31, 80)
    assert len(gaps(history, pp)) == 1
    month, day = divmod_day(50)
    cancelled = history.book(month, day)
    visits.do_cancel_appointment(acting_user=history.desk, appointment=cancelled, reason="")
    assert gaps(history, pp) == []


def test_a_gap_is_a_warning_only_when_expected_used_exceeds_the_count(history):
    pp, _ = history.sell(1, 1)
    visits_on(history, 10, 17, 24, 31, 80)
    assert [g.severity for g in gaps(history, pp, expected_used=5)] == ["info"]  # the count: 5 used
    assert [g.severity for g in gaps(history, pp, expected_used=4)] == ["info"]
    assert [g.severity for g in gaps(history, pp, expected_used=6)] == ["warning"]
