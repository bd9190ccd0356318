"""Re-signing the chain: migration 0009 turns an older install's unkeyed chain (a plain sha256
anyone with the database could recompute) into the keyed one after checking it, and `tally
rekey-audit` re-signs events a fallback key signed, after a key rotation. Both refuse a broken
chain, naming the event and changing nothing."""

from __future__ import annotations

import importlib
from io import StringIO
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from tally.clinic import triggers
from tally.clinic.audit import GENESIS, record, unkeyed_event_hash, verify_chain
from tally.clinic.models import AuditEvent

from .test_chain import keyed_with, raw

pytestmark = pytest.mark.django_db

migration = importlib.import_module("tally.clinic.migrations.0009_audit_chain_keyed")
schema_editor = SimpleNamespace(connection=connection)


def chain(digest, since: int = 0, prev: str = GENESIS) -> str:
    """Sign every link again with `digest` (from event `since` on, after `prev`): an install
    from before 0009 held unkeyed links."""
    triggers.uninstall(connection)
    try:
        with connection.cursor() as cursor:
            for event in AuditEvent.objects.filter(id__gte=since).order_by("id"):
                digest_ = digest(prev, event)
                cursor.execute("UPDATE clinic_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                               [prev, digest_, event.pk])
                prev = digest_
    finally:
        triggers.install(connection)
    return prev


def links() -> list[tuple[int, str, str]]:
    return list(AuditEvent.objects.order_by("id").values_list("id", "prev_hash", "hash"))


def assert_append_only() -> None:
    victim = AuditEvent.objects.order_by("id").values_list("id", flat=True).first()
    for sql in ("UPDATE clinic_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM clinic_auditevent WHERE id = %s"):
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [victim])


def test_a_fresh_database_was_migrated_without_an_event(db):
    assert not AuditEvent.objects.exists()


def test_the_migration_re_signs_an_unkeyed_chain_with_the_key_and_records_it(mixed, settings):
    old_head = chain(unkeyed_event_hash)
    before = AuditEvent.objects.count()
    report = verify_chain()
    assert report.broken_at == links()[0][0] and "unkeyed" in report.problem  # an old chain: not accepted as is
    migration.rekey_existing_events(apps, schema_editor)
    report = verify_chain()
    assert report.intact and report.events == before + 1
    for _, prev, digest in links():
        assert digest != unkeyed_event_hash(prev, AuditEvent.objects.get(hash=digest))
    rekeyed = AuditEvent.objects.order_by("-id").first()
    assert rekeyed.action == "audit.rekeyed" and rekeyed.actor_id is None
    assert rekeyed.after == {"via": "migration clinic.0009_audit_chain_keyed", "from": "unkeyed sha256 chain",
                             "events": before, "old_head": old_head}
    assert rekeyed.hash == keyed_with(settings.SECRET_KEY)(rekeyed.prev_hash, rekeyed)
    assert_append_only()  # the trigger is back
    record("after.migration", actor=None)
    assert verify_chain().intact


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_the_migration_refuses_a_broken_unkeyed_chain_naming_the_event_and_changes_nothing(mixed, tamper):
    chain(unkeyed_event_hash)
    all_ids = [i for i, _, _ in links()]
    if tamper == "edit":
        victim = all_ids[4]
        raw("UPDATE clinic_auditevent SET action = 'patient.nothing_to_see' WHERE id = %s", [victim])
        problem = f"event {victim}: its content does not match its hash"
    else:
        raw("DELETE FROM clinic_auditevent WHERE id = %s", [all_ids[4]])
        victim = all_ids[5]
        problem = f"event {victim}: it does not follow the event before it"
    before = links()
    with pytest.raises(CommandError, match=problem) as refused:
        migration.rekey_existing_events(apps, schema_editor)
    assert f"TALLY_AUDIT_REKEY_ACCEPT={victim}" in str(refused.value)
    assert links() == before and not AuditEvent.objects.filter(action="audit.rekeyed").exists()
    assert_append_only()


def test_a_break_the_operator_accepted_is_re_signed_and_named_in_the_event(mixed, monkeypatch):
    chain(unkeyed_event_hash)
    victim = links()[4][0]
    raw("UPDATE clinic_auditevent SET action = 'patient.nothing_to_see' WHERE id = %s", [victim])
    monkeypatch.setenv("TALLY_AUDIT_REKEY_ACCEPT", str(victim))
    migration.rekey_existing_events(apps, schema_editor)
    assert verify_chain().intact
    rekeyed = AuditEvent.objects.get(action="audit.rekeyed")
    assert rekeyed.after["accepted_breaks"] == [f"event {victim}: its content does not match its hash "
                                                "(the row was changed)"]


def test_a_second_break_is_still_refused(mixed, monkeypatch):
    chain(unkeyed_event_hash)
    first, second = links()[4][0], links()[9][0]
    for victim in (first, second):
        raw("UPDATE clinic_auditevent SET action = 'patient.nothing_to_see' WHERE id = %s", [victim])
    monkeypatch.setenv("TALLY_AUDIT_REKEY_ACCEPT", str(first))
    with pytest.raises(CommandError, match=f"event {second}: .*TALLY_AUDIT_REKEY_ACCEPT={first},{second}"):
        migration.rekey_existing_events(apps, schema_editor)


def test_undoing_the_migration_signs_the_chain_again_unkeyed(mixed):
    before = AuditEvent.objects.count()
    migration.unkey_events(apps, schema_editor)
    assert AuditEvent.objects.count() == before + 1
    assert AuditEvent.objects.order_by("-id").first().action == "audit.unkeyed"
    prev = GENESIS
    for event in AuditEvent.objects.order_by("id"):
        assert (event.prev_hash, event.hash) == (prev, unkeyed_event_hash(prev, event))
        prev = event.hash
    migration.rekey_existing_events(apps, schema_editor)  # and forward again
    assert verify_chain().intact


# ------------------------------------------------------------------ tally rekey-audit


def rekey() -> list[str]:
    out = StringIO()
    call_command("rekey_audit", stdout=out)
    return out.getvalue().splitlines()


def test_rekey_audit_re_signs_what_a_fallback_signed_so_it_can_be_dropped(owner, settings):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the leaked key", []
    for n in range(4):
        record(f"before.rotation.{n}", actor=owner)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the new key", ["the leaked key"]
    record("after.rotation", actor=owner)
    assert verify_chain().fallbacks[0].events == 4
    old_head = verify_chain().head
    lines = rekey()
    assert lines[0] == "5 of 5 events re-signed with the current key"
    assert lines[1] == f"old head {old_head}"
    report = verify_chain()
    assert report.intact and report.events == 6 and report.fallbacks[0].events == 0
    assert lines[2] == f"head {report.head}"
    rekeyed = AuditEvent.objects.order_by("-id").first()
    assert rekeyed.action == "audit.rekeyed"
    assert rekeyed.after["command"] == "tally rekey-audit" and rekeyed.after["old_head"] == old_head
    settings.SECRET_KEY_FALLBACKS = []  # dropped: the log no longer needs it
    assert verify_chain().intact
    assert_append_only()
    assert rekey() == ["6 events, all signed with the current key already: nothing to re-sign"]
    assert AuditEvent.objects.count() == 6


def test_rekey_audit_refuses_a_broken_chain_and_changes_nothing(mixed, settings):
    settings.SECRET_KEY_FALLBACKS = ["an older key"]
    victim = links()[3][0]
    raw("UPDATE clinic_auditevent SET action = 'patient.nothing_to_see' WHERE id = %s", [victim])
    before = links()
    with pytest.raises(CommandError, match=f"nothing was re-signed: event {victim}: its content does not match"):
        rekey()
    assert links() == before
    assert_append_only()


def test_rekey_audit_does_not_bless_a_tail_rewritten_without_the_key(mixed):
    victim = links()[6][0]
    chain(unkeyed_event_hash, since=victim, prev=links()[5][2])
    with pytest.raises(CommandError, match=f"event {victim}"):
        rekey()


def test_rekey_audit_under_a_key_that_signed_nothing_names_the_first_event_and_the_key(mixed, settings):
    """Found by hand on PostgreSQL: the first event's bad hash was reported as 'does not start the chain'."""
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a key this log never saw", []
    first = links()[0][0]
    with pytest.raises(CommandError, match=f"event {first}: its content does not match its hash under "
                                           "TALLY_SECRET_KEY or any of TALLY_SECRET_KEY_FALLBACKS"):
        rekey()
    with pytest.raises(CommandError, match=f"event {first}: its content does not match its hash under"):
        migration.unkey_events(apps, schema_editor)


def test_the_migration_names_an_edited_first_event_as_edited(mixed):
    chain(unkeyed_event_hash)
    first = links()[0][0]
    raw("UPDATE clinic_auditevent SET action = 'patient.nothing_to_see' WHERE id = %s", [first])
    with pytest.raises(CommandError, match=f"event {first}: its content does not match its hash \\(the row"):
        migration.rekey_existing_events(apps, schema_editor)
