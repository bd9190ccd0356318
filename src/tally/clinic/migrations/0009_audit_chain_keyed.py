"""The audit log's chain becomes keyed: every link an HMAC-SHA256 under a key derived from the
server's secret (tally.clinic.audit), instead of a plain sha256 anyone with the database could
recompute after rewriting rows. The existing (unkeyed) chain is checked first, whole: if it is
broken the migration stops, naming the first bad event, and changes nothing. Then every event is
signed again with the current key, inside this migration's transaction, with the audit log's
UPDATE trigger lifted for it alone (put back before the commit, or by the rollback), and the
re-signing is itself an event, "audit.rekeyed", naming the old head hash. Afterwards only the
keyed form exists: `tally verify-audit` accepts nothing else, so a tail rewritten with the old
formula is named as such.

A broken chain someone has looked into can be re-signed anyway, its breaks named in the
"audit.rekeyed" event: TALLY_AUDIT_REKEY_ACCEPT=<event id>[,<event id>...], the ids the refusal
named.

Undone (`tally migrate clinic 0008`, going back to a release that knows only the unkeyed form),
the keyed chain is checked under the current key and its fallbacks and signed again unkeyed, and
an "audit.unkeyed" event says so."""

import datetime as dt
import hashlib
import os

from django.core.management.base import CommandError
from django.db import migrations

ACCEPT_VARIABLE = "TALLY_AUDIT_REKEY_ACCEPT"


def accepted_ids() -> list[int]:
    value = os.environ.get(ACCEPT_VARIABLE, "")
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"{ACCEPT_VARIABLE} must be event ids separated by commas, not {value!r}") from None


def unkeyed(message: bytes, digest: str) -> bool:
    return hashlib.sha256(message).hexdigest() == digest


def rekey_existing_events(apps, schema_editor):
    from tally.clinic.audit import ChainBroken, _plain, event_hash, rechain, unkeyed_link_problem

    AuditEvent = apps.get_model("clinic", "AuditEvent")
    if not AuditEvent.objects.exists():
        return
    try:
        done = rechain(unkeyed, model=AuditEvent, explain=unkeyed_link_problem, accept_broken=accepted_ids())
    except ChainBroken as broken:
        raise CommandError(
            f"the audit log's hash chain is broken, so it was not re-signed with the server's key: "
            f"{broken.problem}. Nothing was changed. Find out what happened to that event; to re-sign the "
            f"chain anyway, naming the break in the audit.rekeyed event, run `tally init` again with "
            f"{ACCEPT_VARIABLE}={','.join(str(i) for i in [*accepted_ids(), broken.event_id])}"
        ) from None
    details = {"via": "migration clinic.0009_audit_chain_keyed", "from": "unkeyed sha256 chain",
               "events": done.events, "old_head": done.old_head}
    if done.accepted:
        details["accepted_breaks"] = done.accepted
    event = AuditEvent(at=dt.datetime.now(dt.UTC), actor=None, role="", action="audit.rekeyed",
                       object_type="auditevent", object_id="", patient=None, before=None,
                       after=_plain(details), ip=None, prev_hash=done.head)
    event.hash = event_hash(done.head, event)
    event.save(force_insert=True)


def unkey_events(apps, schema_editor):
    from tally.clinic.audit import ChainBroken, rechain, signed_by_a_known_key, unkeyed_event_hash

    AuditEvent = apps.get_model("clinic", "AuditEvent")
    if not AuditEvent.objects.exists():
        return
    try:
        done = rechain(signed_by_a_known_key, model=AuditEvent,
                       sign=lambda message: hashlib.sha256(message).hexdigest())
    except ChainBroken as broken:
        raise CommandError(f"the audit log's keyed chain is broken, so it was not signed again unkeyed: "
                           f"{broken.problem}. Nothing was changed.") from None
    event = AuditEvent(at=dt.datetime.now(dt.UTC), actor=None, role="", action="audit.unkeyed",
                       object_type="auditevent", object_id="", patient=None, before=None,
                       after={"via": "migration clinic.0009_audit_chain_keyed undone", "events": done.events,
                              "old_head": done.old_head}, ip=None, prev_hash=done.head)
    event.hash = unkeyed_event_hash(done.head, event)
    event.save(force_insert=True)


class Migration(migrations.Migration):
    dependencies = [("clinic", "0008_apitoken_expires_at")]
    operations = [migrations.RunPython(rekey_existing_events, unkey_events)]
