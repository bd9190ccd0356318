"""The pure coverage rules (SPEC.md rules 1-6, 12): facts in, a decision out. No database."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.clinic import rules
from tally.clinic.rules import (
    CHARGED_BEFORE_PURCHASE,
    PACKAGE_CANCELLED,
    PACKAGE_EXHAUSTED,
    PACKAGE_EXPIRED,
    PACKAGE_NOT_PAID,
    REASON_CODES,
    SERVICE_NOT_IN_PACKAGE,
    PackageFacts,
    decide_coverage,
    last_valid_day,
    not_covered_reason,
    why_not,
)

ACU60, ACU90, MASSAGE = 1, 2, 3
DAY = dt.date(2026, 6, 10)


def facts(id: int = 1, **overrides) -> PackageFacts:
    """An active, paid 10-pack for ACU60 sold on DAY, never expiring, 5 sessions left."""
    values = dict(
        id=id,
        eligible_service_ids=frozenset({ACU60}),
        sold_on=DAY,
        sold_at=dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC),
        activated=True,
        cancelled=False,
        sessions_remaining=5,
        last_valid_day=None,
    )
    values.update(overrides)
    return PackageFacts(**values)


def sold(day: dt.date, hour: int = 9) -> dict:
    return {"sold_on": day, "sold_at": dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)}


# --- why_not: one reason per way a package can fail to cover ---


def test_an_active_eligible_package_with_sessions_left_can_cover():
    assert why_not(facts(), ACU60, DAY) is None


@pytest.mark.parametrize(
    ("overrides", "service", "invoice_date", "reason"),
    [
        ({}, ACU90, DAY, SERVICE_NOT_IN_PACKAGE),
        ({"cancelled": True}, ACU60, DAY, PACKAGE_CANCELLED),
        ({"activated": False}, ACU60, DAY, PACKAGE_NOT_PAID),
        ({}, ACU60, DAY - dt.timedelta(days=1), CHARGED_BEFORE_PURCHASE),
        ({"last_valid_day": DAY + dt.timedelta(days=29)}, ACU60, DAY + dt.timedelta(days=30), PACKAGE_EXPIRED),
        ({"sessions_remaining": 0}, ACU60, DAY, PACKAGE_EXHAUSTED),
    ],
    ids=["service", "cancelled", "not-paid", "before-purchase", "expired", "exhausted"],
)
def test_why_not_names_the_reason_a_package_cannot_cover(overrides, service, invoice_date, reason):
    assert why_not(facts(**overrides), service, invoice_date) == reason


def test_a_visit_on_the_sale_day_is_not_before_the_purchase():
    assert why_not(facts(), ACU60, DAY) is None
    assert why_not(facts(), ACU60, DAY - dt.timedelta(days=1)) == CHARGED_BEFORE_PURCHASE


def test_the_last_valid_day_is_still_covered_and_the_day_after_is_not():
    package = facts(last_valid_day=DAY + dt.timedelta(days=9))
    assert why_not(package, ACU60, DAY + dt.timedelta(days=9)) is None
    assert why_not(package, ACU60, DAY + dt.timedelta(days=10)) == PACKAGE_EXPIRED


def test_the_wrong_service_is_reported_before_any_other_reason():
    package = facts(cancelled=True, activated=False, sessions_remaining=0)
    assert why_not(package, MASSAGE, DAY) == SERVICE_NOT_IN_PACKAGE


def test_a_cancelled_package_says_cancelled_even_when_it_was_never_paid():
    assert why_not(facts(cancelled=True, activated=False), ACU60, DAY) == PACKAGE_CANCELLED


def test_an_expired_package_says_expired_even_when_also_exhausted():
    package = facts(last_valid_day=DAY, sessions_remaining=0)
    assert why_not(package, ACU60, DAY + dt.timedelta(days=1)) == PACKAGE_EXPIRED


# --- last_valid_day: rule 12 ---


def test_valid_n_days_means_the_activation_day_and_the_n_minus_1_days_after_it():
    assert last_valid_day(dt.date(2026, 3, 1), 30) == dt.date(2026, 3, 30)
    assert last_valid_day(dt.date(2026, 3, 1), 1) == dt.date(2026, 3, 1)
    assert last_valid_day(dt.date(2026, 12, 31), 2) == dt.date(2027, 1, 1)


def test_a_package_without_validity_or_activation_has_no_last_day():
    assert last_valid_day(dt.date(2026, 3, 1), None) is None
    assert last_valid_day(None, 30) is None


# --- decide_coverage: rule 6 ---


def test_a_covered_line_records_no_reason_and_every_package_considered():
    decision = decide_coverage(ACU60, DAY, [facts(1), facts(2, cancelled=True)])
    assert decision.covered_by == 1
    assert decision.reason is None
    assert decision.considered == ((1, None), (2, PACKAGE_CANCELLED))
    assert decision.as_record()["considered"] == [
        {"patient_package_id": 1, "reason": None},
        {"patient_package_id": 2, "reason": PACKAGE_CANCELLED},
    ]


def test_the_package_that_expires_first_is_used():
    later = facts(1, **sold(DAY - dt.timedelta(days=5)), last_valid_day=DAY + dt.timedelta(days=90))
    sooner = facts(2, **sold(DAY - dt.timedelta(days=1)), last_valid_day=DAY + dt.timedelta(days=10))
    assert decide_coverage(ACU60, DAY, [later, sooner]).covered_by == 2


def test_a_package_that_never_expires_comes_after_one_that_does():
    never = facts(1, **sold(DAY - dt.timedelta(days=5)))
    expiring = facts(2, **sold(DAY - dt.timedelta(days=1)), last_valid_day=DAY + dt.timedelta(days=300))
    assert decide_coverage(ACU60, DAY, [never, expiring]).covered_by == 2


def test_between_packages_expiring_together_the_oldest_is_used():
    newer = facts(1, **sold(DAY - dt.timedelta(days=1)))
    older = facts(2, **sold(DAY - dt.timedelta(days=3)))
    assert decide_coverage(ACU60, DAY, [newer, older]).covered_by == 2


def test_exhausted_expired_and_cancelled_packages_are_skipped_for_one_that_can_cover():
    held = [
        facts(1, **sold(DAY - dt.timedelta(days=9)), sessions_remaining=0),
        facts(2, **sold(DAY - dt.timedelta(days=8)), last_valid_day=DAY - dt.timedelta(days=1)),
        facts(3, **sold(DAY - dt.timedelta(days=7)), cancelled=True),
        facts(4, **sold(DAY - dt.timedelta(days=6))),
    ]
    assert decide_coverage(ACU60, DAY, held).covered_by == 4


def test_without_packages_nothing_covers_and_there_is_no_reason():
    decision = decide_coverage(ACU60, DAY, [])
    assert (decision.covered_by, decision.reason, decision.considered) == (None, None, ())


def test_when_no_package_includes_the_service_the_reason_is_service_not_in_package():
    decision = decide_coverage(MASSAGE, DAY, [facts(1), facts(2, eligible_service_ids=frozenset({ACU90}))])
    assert decision.covered_by is None
    assert decision.reason == SERVICE_NOT_IN_PACKAGE


def test_the_reason_is_that_of_the_most_recently_sold_eligible_package():
    older_exhausted = facts(1, **sold(DAY - dt.timedelta(days=30)), sessions_remaining=0)
    newer_unpaid = facts(2, **sold(DAY - dt.timedelta(days=2)), activated=False)
    newest_other_service = facts(3, **sold(DAY - dt.timedelta(days=1)), eligible_service_ids=frozenset({ACU90}))
    decision = decide_coverage(ACU60, DAY, [newer_unpaid, newest_other_service, older_exhausted])
    assert decision.covered_by is None
    assert decision.reason == PACKAGE_NOT_PAID


def test_not_covered_reason_is_none_for_a_patient_without_packages():
    assert not_covered_reason(ACU60, [], ()) is None


# --- properties over any set of packages ---

SERVICES = st.sampled_from([ACU60, ACU90, MASSAGE])
DAYS = st.integers(min_value=-20, max_value=20).map(lambda n: DAY + dt.timedelta(days=n))


@st.composite
def package_lists(draw) -> list[PackageFacts]:
    count = draw(st.integers(min_value=0, max_value=6))
    # Distinct sale moments, so "most recently sold" and "oldest" are never a tie.
    minutes = draw(st.lists(st.integers(0, 40 * 24 * 60), min_size=count, max_size=count, unique=True))
    packages = []
    for index, minute in enumerate(minutes, start=1):
        sold_at = dt.datetime(2026, 5, 20, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
        packages.append(
            PackageFacts(
                id=index * 7,  # ids unrelated to the sale order
                eligible_service_ids=frozenset(draw(st.sets(SERVICES, min_size=1))),
                sold_on=sold_at.date(),
                sold_at=sold_at,
                activated=draw(st.booleans()),
                cancelled=draw(st.booleans()),
                sessions_remaining=draw(st.integers(min_value=0, max_value=3)),
                last_valid_day=draw(st.none() | DAYS),
            )
        )
    return packages


@given(package_lists(), SERVICES, DAYS)
def test_property_a_covering_package_is_always_one_that_can_cover(held, service, day):
    decision = decide_coverage(service, day, held)
    if decision.covered_by is not None:
        covering = next(p for p in held if p.id == decision.covered_by)
        assert why_not(covering, service, day) is None
        assert decision.reason is None


@given(package_lists(), SERVICES, DAYS)
def test_property_if_any_package_can_cover_something_covers(held, service, day):
    can_cover = [p for p in held if why_not(p, service, day) is None]
    decision = decide_coverage(service, day, held)
    assert (decision.covered_by is not None) == bool(can_cover)


@given(package_lists(), SERVICES, DAYS)
def test_property_covered_by_is_never_a_package_with_a_reason(held, service, day):
    decision = decide_coverage(service, day, held)
    reasons = dict(decision.considered)
    assert [pid for pid, _ in decision.considered] == [p.id for p in held]
    assert all(reasons[p.id] == why_not(p, service, day) for p in held)
    assert all(r is None or r in REASON_CODES for r in reasons.values())
    if decision.covered_by is not None:
        assert reasons[decision.covered_by] is None


@given(package_lists(), SERVICES, DAYS)
def test_property_the_covering_package_expires_first_then_is_the_oldest(held, service, day):
    decision = decide_coverage(service, day, held)
    usable = [p for p in held if why_not(p, service, day) is None]
    if usable:
        first = min(usable, key=lambda p: (p.last_valid_day or dt.date.max, p.sold_at))
        assert decision.covered_by == first.id


@given(package_lists(), SERVICES, DAYS)
def test_property_not_covered_reason_follows_rule_6(held, service, day):
    decision = decide_coverage(service, day, held)
    if decision.covered_by is not None:
        return
    eligible = [p for p in held if service in p.eligible_service_ids]
    if not held:
        expected = None
    elif not eligible:
        expected = SERVICE_NOT_IN_PACKAGE
    else:
        latest = max(eligible, key=lambda p: p.sold_at)
        expected = why_not(latest, service, day)
    assert decision.reason == expected


@given(st.data(), package_lists(), SERVICES, DAYS)
def test_property_the_decision_does_not_depend_on_the_order_of_the_packages(data, held, service, day):
    shuffled = data.draw(st.permutations(held))
    first, second = decide_coverage(service, day, held), decide_coverage(service, day, shuffled)
    assert (first.covered_by, first.reason) == (second.covered_by, second.reason)
    assert dict(first.considered) == dict(second.considered)


@given(package_lists(), SERVICES, DAYS)
def test_property_a_cancelled_package_never_covers(held, service, day):
    closed = [replace(p, cancelled=True) for p in held]
    assert decide_coverage(service, day, closed).covered_by is None


def test_clinic_date_uses_the_clinic_time_zone():
    from zoneinfo import ZoneInfo

    late_evening_in_new_york = dt.datetime(2026, 6, 11, 1, 30, tzinfo=dt.UTC)
    assert rules.clinic_date(late_evening_in_new_york, ZoneInfo("America/New_York")) == dt.date(2026, 6, 10)
    end = rules.end_of_day(dt.date(2026, 6, 10), ZoneInfo("America/New_York"))
    assert rules.clinic_date(end, ZoneInfo("America/New_York")) == dt.date(2026, 6, 10)
    assert rules.clinic_date(end + dt.timedelta(microseconds=1), ZoneInfo("America/New_York")) == dt.date(2026, 6, 11)


def test_the_end_of_a_day_whose_last_hour_is_repeated_is_its_last_instant():
    # Santiago leaves summer time at midnight on 6 April 2025: 23:00-24:00 on the 5th happens
    # twice. A package whose last day is the 5th is valid until the second of them ends (rule 12),
    # not an hour before the clinic's day is over.
    from zoneinfo import ZoneInfo

    santiago = ZoneInfo("America/Santiago")
    end = rules.end_of_day(dt.date(2025, 4, 5), santiago)
    next_midnight = dt.datetime(2025, 4, 6, tzinfo=santiago)
    assert end.astimezone(dt.UTC) + dt.timedelta(microseconds=1) == next_midnight.astimezone(dt.UTC)
    assert rules.clinic_date(end, santiago) == dt.date(2025, 4, 5)
