"""Staff user names as the command line and sign-in read them: one name, however typed."""

from __future__ import annotations

import pytest

from tally.clinic.actions.staff_accounts import do_create_staff, do_deactivate_staff, do_grant_token
from tally.clinic.actions.two_factor import do_reset_two_factor
from tally.clinic.errors import Conflict, Invalid
from tally.clinic.models import Staff

PASSWORD = "correct horse battery staple"
COMPOSED = "Jos\u00e9"  # é as one code point (NFC), as most keyboards type it
DECOMPOSED = "Jose\u0301"  # e + combining acute (NFD), as macOS and some input methods send it


def test_a_user_name_is_stored_composed_so_it_matches_what_the_sign_in_form_reads(db):
    staff = do_create_staff(acting_user=None, username=DECOMPOSED, role="front_desk", password=PASSWORD)
    assert staff.username == COMPOSED


def test_a_second_account_whose_name_differs_only_in_how_its_accent_is_encoded_is_refused(db):
    do_create_staff(acting_user=None, username=COMPOSED, role="front_desk", password=PASSWORD)
    with pytest.raises(Conflict):
        do_create_staff(acting_user=None, username=DECOMPOSED, role="owner", password=PASSWORD)
    assert Staff.objects.count() == 1


@pytest.mark.parametrize("typed", [COMPOSED, DECOMPOSED])
def test_commands_find_the_staff_member_however_the_name_is_encoded(db, typed):
    do_create_staff(acting_user=None, username=COMPOSED, role="front_desk", password=PASSWORD)
    token, _ = do_grant_token(acting_user=None, username=typed)
    assert token.staff.username == COMPOSED
    assert do_reset_two_factor(acting_user=None, username=typed) == 0
    assert do_deactivate_staff(acting_user=None, username=typed).username == COMPOSED


@pytest.mark.parametrize("field, value", [
    ("username", "x" * 151),
    ("username", "ana\x01"),
    ("username", "ana\nbob"),
    ("first_name", "x" * 151),
    ("last_name", "x" * 151),
])
def test_a_staff_member_the_database_cannot_store_is_refused_in_words(db, field, value):
    """PostgreSQL refused these with a DataError traceback (SQLite stored them whole)."""
    names = {"username": "ana", "first_name": "", "last_name": ""} | {field: value}
    with pytest.raises(Invalid) as refused:
        do_create_staff(acting_user=None, role="front_desk", password=PASSWORD, **names)
    assert field in refused.value.fields
    assert not Staff.objects.exists()


def test_a_token_label_longer_than_the_database_keeps_is_refused_in_words(db):
    do_create_staff(acting_user=None, username="ana", role="front_desk", password=PASSWORD)
    with pytest.raises(Invalid) as refused:
        do_grant_token(acting_user=None, username="ana", label="x" * 101)
    assert "label" in refused.value.fields
