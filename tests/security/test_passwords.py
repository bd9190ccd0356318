"""Passwords: Argon2id, at least 12 characters, not a common one, long ones welcome."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import identify_hasher
from django.test import Client

from tally import settings as tally_settings
from tally.clinic.actions.staff_accounts import do_create_staff
from tally.clinic.errors import Invalid
from tally.clinic.models import Staff

PRODUCTION_HASHERS = [h for h in tally_settings.PASSWORD_HASHERS if "MD5" not in h]


@pytest.fixture
def production_hashers(settings):
    """Tests hash with MD5 for speed; these check what production stores."""
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS


def test_production_hashes_with_argon2_first():
    assert PRODUCTION_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"


def test_a_stored_password_is_an_argon2id_hash(db, production_hashers):
    staff = do_create_staff(acting_user=None, username="ana", role="front_desk",
                            password="a long enough passphrase")
    staff.refresh_from_db()
    assert staff.password.startswith("argon2$argon2id$"), staff.password[:20]
    assert identify_hasher(staff.password).algorithm == "argon2"
    assert staff.check_password("a long enough passphrase")


def test_an_old_pbkdf2_hash_still_signs_in_and_is_upgraded_to_argon2id(db, production_hashers):
    staff = Staff.objects.create(username="old", role="front_desk")
    from django.contrib.auth.hashers import make_password

    staff.password = make_password("a long enough passphrase", hasher="pbkdf2_sha256")
    staff.save()
    assert staff.check_password("a long enough passphrase")
    staff.refresh_from_db()
    assert staff.password.startswith("argon2$argon2id$")


@pytest.mark.parametrize("password, reason", [
    ("short-pass1", "too short"),  # 11 characters
    ("qwertyuiop123", "too common"),
    ("1234567890123", "entirely numeric"),
    ("annabelle-smith", "too similar"),
])
def test_it_refuses_weak_passwords(db, password, reason):
    with pytest.raises(Invalid) as refused:
        do_create_staff(acting_user=None, username="annabelle-smith", role="front_desk", password=password,
                        first_name="Annabelle", last_name="Smith")
    assert reason in refused.value.message
    assert not Staff.objects.filter(username="annabelle-smith").exists()


def test_twelve_characters_are_enough(db):
    assert do_create_staff(acting_user=None, username="ana", role="front_desk", password="bright-otter")


@pytest.mark.parametrize("length", [64, 200, 1000])
def test_long_passwords_are_accepted_and_sign_in(db, clinic, production_hashers, length):
    password = ("Quiet river stones, " * 60)[:length]
    staff = do_create_staff(acting_user=None, username=f"long{length}", role="front_desk", password=password)
    assert staff.check_password(password)
    web = Client().post("/login/", {"username": staff.username, "password": password})
    assert web.status_code == 302 and web["Location"] == "/today/"
    api = Client().post("/api/v1/auth/token", {"username": staff.username, "password": password},
                        content_type="application/json")
    assert api.status_code == 200, api.content
