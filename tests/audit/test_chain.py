"""The audit log is append-only (triggers on both databases) and chained with a hash keyed by
the server's secret; `tally verify-audit` recomputes the chain and names the first event that
was changed, deleted, inserted or moved behind Tally's back, or whose links were recomputed
without the key."""

from __future__ import annotations

import datetime as dt
import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils.crypto import salted_hmac

from tally import cli
from tally.clinic import triggers
from tally.clinic.audit import (
    GENESIS,
    Shown,
    canonical,
    chained_at_end,
    record,
    record_reads,
    verify_chain,
)
from tally.clinic.models import AuditEvent

from .conftest import staff_client

pytestmark = pytest.mark.django_db


def ids() -> list[int]:
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


def raw(sql: str, params: list) -> None:
    """Behind Tally's back: lift the triggers (a test-transaction change, rolled back after)."""
    triggers.uninstall(connection)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    finally:
        triggers.install(connection)


def verify_output(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def test_a_realistic_history_verifies(mixed):
    count = AuditEvent.objects.count()
    assert count > 20
    report = verify_chain()
    assert report.intact and report.events == count
    assert verify_output().splitlines()[0] == f"{count} events, chain intact"
    first = AuditEvent.objects.order_by("id").first()
    assert first.prev_hash == GENESIS
    hashes = list(AuditEvent.objects.order_by("id").values_list("prev_hash", "hash"))
    assert all(prev == hashes[i - 1][1] for i, (prev, _) in enumerate(hashes) if i)


def test_an_edited_row_is_named(mixed):
    victim = ids()[len(ids()) // 2]
    raw("UPDATE clinic_auditevent SET action = %s WHERE id = %s", ["patient.nothing_to_see", victim])
    report = verify_chain()
    assert report.broken_at == victim and "content does not match" in report.problem
    with pytest.raises(CommandError, match=f"event {victim}: its content does not match") as error:
        verify_output()
    assert error.value.returncode == 1


@pytest.mark.parametrize("column, value", [("ip", "198.51.100.1"), ("at", "2020-01-01 00:00:00"),
                                           ("after", '{"page": "forged"}'), ("actor_id", None)])
def test_any_hashed_column_edited_is_caught(mixed, column, value):
    victim = AuditEvent.objects.filter(action="patient.view_chart").values_list("id", flat=True).first()
    raw(f"UPDATE clinic_auditevent SET {column} = %s WHERE id = %s", [value, victim])
    assert verify_chain().broken_at == victim


def test_a_row_rehashed_by_the_forger_breaks_the_next_link(mixed, settings):
    """Even with the server's key, one row re-signed alone breaks the link after it."""
    victim, follower = ids()[3], ids()[4]
    event = AuditEvent.objects.get(pk=victim)
    event.action = "forged"
    forged = keyed_with(settings.SECRET_KEY)(event.prev_hash, event)
    raw("UPDATE clinic_auditevent SET action = %s, hash = %s WHERE id = %s", ["forged", forged, victim])
    report = verify_chain()
    assert report.broken_at == follower and "does not follow" in report.problem


def test_a_deleted_row_in_the_middle_is_named(mixed):
    all_ids = ids()
    raw("DELETE FROM clinic_auditevent WHERE id = %s", [all_ids[5]])
    report = verify_chain()
    assert report.broken_at == all_ids[6] and "deleted or inserted" in report.problem
    with pytest.raises(CommandError, match=f"event {all_ids[6]}"):
        verify_output()


def test_a_deleted_first_row_is_named(mixed):
    all_ids = ids()
    raw("DELETE FROM clinic_auditevent WHERE id = %s", [all_ids[0]])
    assert verify_chain().broken_at == all_ids[1]


def test_events_cut_off_the_end_are_caught_against_a_noted_head(mixed):
    head = verify_output().splitlines()[1].removeprefix("head ")
    record("later.event", actor=None)
    assert verify_output("--head", head).startswith(f"{AuditEvent.objects.count()} events, chain intact")
    last = ids()[-1]
    raw("DELETE FROM clinic_auditevent WHERE id >= %s", [ids()[-2]])
    assert verify_chain().intact  # the chain alone cannot see a shorter end...
    with pytest.raises(CommandError, match="not in the chain"):  # ...the head noted elsewhere can
        verify_output("--head", head)
    assert last not in ids()


def test_the_database_refuses_update_and_delete_of_any_column(mixed):
    victim = ids()[2]
    for sql in ("UPDATE clinic_auditevent SET hash = 'x' WHERE id = %s",
                "UPDATE clinic_auditevent SET prev_hash = 'x' WHERE id = %s",
                "DELETE FROM clinic_auditevent WHERE id = %s"):
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [victim])
    assert verify_chain().intact


@pytest.mark.postgres_only  # SQLite has no TRUNCATE: a DELETE without WHERE is refused row by row
@pytest.mark.parametrize("table", triggers.APPEND_ONLY_TABLES)
def test_the_database_refuses_to_truncate_the_append_only_tables(mixed, table):
    """TRUNCATE fires no row trigger: one statement emptied the audit log (or the ledger), and
    `tally flush` did it with every other table, where SQLite refuses it."""
    before = AuditEvent.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as a session of its own has no checks pending
    with pytest.raises((IntegrityError, DatabaseError), match="append-only"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.count() == before and verify_chain().intact


def test_a_fork_is_refused_by_the_database(mixed):
    """Two events following one: the unique prev_hash refuses the second, whatever the code did."""
    last = AuditEvent.objects.order_by("-id").first()
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.bulk_create([AuditEvent(at=last.at, action="fork", object_type="x",
                                                   prev_hash=last.prev_hash, hash="f" * 64)])


def test_reads_with_several_objects_chain_in_id_order(desk, clinic, patient):
    events = record_reads(desk, "patient.list", [Shown(patient.pk, "patient", patient.pk), Shown(None, "x", 1)])
    assert [e.pk for e in events] == sorted(e.pk for e in events)
    assert events[1].prev_hash == events[0].hash
    assert verify_chain().intact


def test_the_command_line_spells_it_verify_audit(mixed, capsys, monkeypatch):
    import django.core.management

    # Django's own dispatcher closes every connection when done: run the command it picked in-process.
    monkeypatch.setattr(django.core.management, "execute_from_command_line",
                        lambda argv: call_command(argv[1], *argv[2:]))
    cli.main(["verify-audit"])
    assert capsys.readouterr().out.startswith(f"{AuditEvent.objects.count()} events, chain intact")
    assert "verify-audit" in cli.TALLY_COMMANDS


def test_events_recorded_in_an_action_are_chained_at_its_end_and_dropped_with_a_rolled_back_savepoint(owner):
    """`chained_at_end`: the events wait for the end of the block (the chain's lock is taken
    there, just before the commit), keep their order, and a savepoint that rolls back takes its
    events with it, as it takes every other row it wrote."""
    before = AuditEvent.objects.count()
    with transaction.atomic(), chained_at_end():
        first = record("kept.first", actor=owner)
        assert first.pk is None and AuditEvent.objects.count() == before  # not written yet
        with pytest.raises(RuntimeError), transaction.atomic():
            record("rolled.back", actor=owner)
            raise RuntimeError("the inner block fails")
        record("kept.second", actor=owner)
    assert first.pk is not None
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)[before:]) == \
        ["kept.first", "kept.second"]
    assert verify_chain().intact


def test_a_block_that_fails_appends_nothing(owner):
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic(), chained_at_end():
        record("never.written", actor=owner)
        raise RuntimeError("the action fails")
    assert AuditEvent.objects.count() == before
    record("next.event", actor=owner)
    assert verify_chain().intact


def test_an_event_is_stamped_when_it_is_chained_so_time_order_is_commit_order(desk, patient, monkeypatch):
    """An event waits for the end of its transaction to be chained; its time is taken then,
    under the chain's lock, so a client polling /audit-log from the last time it saw cannot
    miss an event that a slower transaction commits later with an earlier time."""
    from tally.clinic import audit

    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    with transaction.atomic(), chained_at_end():
        event = record("patient.update", actor=desk, obj=patient, patient_id=patient.pk)
        assert event.pk is None and event.at < later  # recorded, not yet chained
        monkeypatch.setattr(audit.timezone, "now", lambda: later)
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.at == later
    assert verify_chain().intact


def test_a_read_filtered_with_a_nul_character_is_recorded(owner, clinic):
    """Found by the form fuzzing on PostgreSQL: /audit/?code=a%00 made a 500, because jsonb
    cannot hold a NUL character. It is recorded as U+FFFD, and the chain still verifies."""
    response = staff_client(owner).get("/audit/", {"code": "a\x00b"})
    assert response.status_code == 200
    event = AuditEvent.objects.order_by("-id").first()
    assert "a\ufffdb" in str(event.after)
    assert verify_chain().intact


# ------------------------------------------------------------------ the chain is keyed


def unkeyed(prev: str, event: AuditEvent) -> str:
    return hashlib.sha256((prev + canonical(event)).encode()).hexdigest()


def keyed_with(secret: str):
    def digest(prev: str, event: AuditEvent) -> str:
        return salted_hmac("tally.audit-chain", prev + canonical(event), secret=secret, algorithm="sha256").hexdigest()
    return digest


def rewrite_tail(start: int, digest) -> None:
    """What someone with write access to the database alone can do: change an event and
    recompute every later link consistently, with a formula of their choosing."""
    rows = list(AuditEvent.objects.filter(id__gte=start).order_by("id"))
    prev = AuditEvent.objects.filter(id__lt=start).order_by("-id").values_list("hash", flat=True).first() or GENESIS
    rows[0].action = "patient.nothing_to_see"
    triggers.uninstall(connection)
    try:
        with connection.cursor() as cursor:
            for row in rows:
                row.prev_hash, row.hash = prev, digest(prev, row)
                cursor.execute("UPDATE clinic_auditevent SET action = %s, prev_hash = %s, hash = %s WHERE id = %s",
                               [row.action, row.prev_hash, row.hash, row.pk])
                prev = row.hash
    finally:
        triggers.install(connection)


def test_every_link_is_an_hmac_keyed_by_the_secret_key(mixed, settings):
    """Django's salted_hmac (SHA-256, salt "tally.audit-chain") of the previous hash and the
    event's content: recomputing a link needs the server's secret, not the database alone."""
    for event in AuditEvent.objects.order_by("id"):
        assert event.hash == keyed_with(settings.SECRET_KEY)(event.prev_hash, event)
        assert event.hash != unkeyed(event.prev_hash, event)


def test_a_tail_rewritten_consistently_with_the_unkeyed_formula_is_named(mixed):
    victim = ids()[len(ids()) // 2]
    rewrite_tail(victim, unkeyed)
    report = verify_chain()
    assert report.broken_at == victim and report.events == ids().index(victim)
    assert "unkeyed" in report.problem and "without the server's secret key" in report.problem
    with pytest.raises(CommandError, match=f"event {victim}: its hash is the unkeyed") as error:
        verify_output()
    assert error.value.returncode == 1


def test_a_tail_rewritten_consistently_with_a_wrong_key_is_named(mixed):
    victim = ids()[3]
    rewrite_tail(victim, keyed_with("a key guessed by the forger"))
    report = verify_chain()
    assert report.broken_at == victim and "content does not match its hash" in report.problem
    with pytest.raises(CommandError, match=f"event {victim}: its content does not match"):
        verify_output()


def test_the_whole_chain_rewritten_with_a_wrong_key_is_named_at_its_first_event(mixed):
    first = ids()[0]
    rewrite_tail(first, keyed_with("another install's key"))
    assert verify_chain().broken_at == first


def test_a_reordered_row_is_named(mixed):
    """Two rows swap places (their ids): the later one no longer follows the one before it."""
    all_ids = ids()
    a, b = all_ids[4], all_ids[5]
    spare = all_ids[-1] + 1000
    for old, new in ((a, spare), (b, a), (spare, b)):
        raw("UPDATE clinic_auditevent SET id = %s WHERE id = %s", [new, old])
    report = verify_chain()
    assert report.broken_at == a and "does not follow" in report.problem


def test_a_rotated_key_verifies_the_old_events_through_its_fallback_and_says_how_many(owner, settings):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the key of last year", []
    old = [record("before.rotation", actor=owner).pk for _ in range(3)]
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "this year's key", ["an unused key", "the key of last year"]
    new = record("after.rotation", actor=owner)
    assert new.hash == keyed_with("this year's key")(new.prev_hash, new)  # new events: the current key
    report = verify_chain()
    assert report.intact and report.events == AuditEvent.objects.count()
    assert [(use.events, use.first_id, use.last_id) for use in report.fallbacks] == [(0, None, None),
                                                                                   (3, old[0], old[-1])]
    lines = verify_output().splitlines()
    assert lines[0] == f"{AuditEvent.objects.count()} events, chain intact"
    assert any(line.startswith(f"3 events (ids {old[0]} to {old[-1]}) were signed with TALLY_SECRET_KEY_FALLBACKS "
                               "key 2: keep it") for line in lines)
    assert "TALLY_SECRET_KEY_FALLBACKS key 1 signed no event" in " ".join(lines)

    settings.SECRET_KEY_FALLBACKS = []  # dropped too early: the old events no longer verify
    report = verify_chain()
    assert report.broken_at == old[0] and "content does not match its hash" in report.problem


def test_the_keyed_hmac_is_built_once_per_key_not_per_event(owner, settings):
    from tally.clinic import audit

    assert audit._chain_signer() is audit._chain_signer()
    first = audit._chain_signer()
    settings.SECRET_KEY = "a rotated key"
    assert audit._chain_signer() is not first
    assert record("after.rotation", actor=owner).hash.isalnum()
