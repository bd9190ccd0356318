"""The session ledger: the only code that writes entries or moves a package's count.

Every change of a count is one appended entry; the cached `sessions_used` on the
package moves in the same statement block, inside the caller's transaction, with
the package row already locked by the caller (see `locking.py`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from .compiled import Compiled, CompiledUpdate, insert
from .errors import Conflict, Invalid
from .models import Appointment, InvoiceLine, PackageLedgerEntry, PatientPackage, Staff
from .models.ledger import EntryKind

# Compiled once per connection (compiled.py): post_entry runs on every covered check-in.
_COUNT = Compiled(lambda pk: PatientPackage.objects.filter(pk=pk).values_list(
    "sessions_used", "ledger_seq", "sessions_total")[:2], int)
# The count moves only if no one else moved it since it was read (ledger_seq still seq_before).
_MOVE_COUNT = CompiledUpdate(lambda pk, seq_before, change, seq: (
    PatientPackage.objects.filter(pk=pk, ledger_seq=seq_before),
    {"sessions_used": F("sessions_used") - change, "ledger_seq": seq},
), int, int, int, int)


def post_entry(
    package: PatientPackage,
    *,
    kind: str,
    change: int,
    by: Staff | None,
    reason: str = "",
    invoice_line: InvoiceLine | None = None,
    appointment_id: int | None = None,
    reverses: PackageLedgerEntry | None = None,
    at: dt.datetime | None = None,
) -> PackageLedgerEntry:
    """Append one entry and move the package's cached count with it.

    `change` is the effect on sessions_remaining. Refuses to leave 0 <= used <= total.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("post_entry() must run inside a transaction")
    if kind not in EntryKind.values:
        raise ValueError(f"unknown ledger entry kind {kind!r}")
    # Read the count inside the same transaction that writes it.
    used_before, seq_before, total = _COUNT.get(package.pk)
    used_after = used_before - change
    if not 0 <= used_after <= total:
        raise Invalid(
            f"That would leave {used_after} of {total} sessions used; "
            "a count stays between 0 and the package's total.",
            fields={"change": "out of range"},
        )
    seq = seq_before + 1
    entry = PackageLedgerEntry(
        patient_package_id=package.pk,
        seq=seq,
        kind=kind,
        change=change,
        used_after=used_after,
        sessions_total=total,
        at=at or timezone.now(),
        invoice_line=invoice_line,
        appointment_id=appointment_id if appointment_id is not None else getattr(invoice_line, "appointment_id", None),
        reverses=reverses,
        reason=reason,
        by=by,
    )
    insert(entry)
    updated = _MOVE_COUNT(package.pk, seq_before, change, seq)
    if updated != 1:  # someone moved the count without holding the lock: never expected
        raise Conflict("The package changed while this was being saved; please try again.")
    package.sessions_used = used_after
    package.ledger_seq = seq
    return entry


def use_session(package: PatientPackage, *, by: Staff | None, invoice_line: InvoiceLine | None = None,
                appointment_id: int | None = None, reason: str = "", at: dt.datetime | None = None) -> PackageLedgerEntry:
    return post_entry(package, kind=EntryKind.USE, change=-1, by=by, reason=reason,
                      invoice_line=invoice_line, appointment_id=appointment_id, at=at)


def live_use_for_line(line: InvoiceLine) -> PackageLedgerEntry | None:
    return (
        PackageLedgerEntry.objects.filter(invoice_line=line, kind=EntryKind.USE, reversed_by__isnull=True)
        .order_by("-id")
        .first()
    )


def live_uses_for_visit(appointment_id: int) -> QuerySet[PackageLedgerEntry]:
    """The uses not reversed that count this visit: its lines' (an entry names its line's
    visit) and a no-show's under the no-show policy."""
    return PackageLedgerEntry.objects.filter(appointment_id=appointment_id, kind=EntryKind.USE,
                                             reversed_by__isnull=True)


def reverse_entry(entry: PackageLedgerEntry, *, by: Staff | None, reason: str,
                  at: dt.datetime | None = None) -> PackageLedgerEntry:
    """Undo one `use`: the session comes back (rule 7)."""
    package = PatientPackage.objects.get(pk=entry.patient_package_id)
    return post_entry(
        package,
        kind=EntryKind.REVERSAL,
        change=1,
        by=by,
        reason=reason,
        invoice_line=entry.invoice_line,
        appointment_id=entry.appointment_id,
        reverses=entry,
        at=at,
    )


# --- import: historical entries in bulk, replayed before anything is written ---


def import_entries(rows: Iterable[Mapping]) -> int:
    """Append imported history (earlier systems, the benchmark clinic) in bulk, all or nothing.

    Each row: patient_package_id, seq, kind, change, at, and optionally used_after (checked),
    invoice_line_id, appointment_id, reverses_seq (the seq of the use it undoes, same
    package), reason, by_id. Each package must have no entries yet, and its rows must replay
    cleanly: seq 1..n, the running count within 0..total, every reversal pointing at an
    unreversed use. Anything else refuses the whole import. Returns the entries written.
    """
    by_package: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_package[row["patient_package_id"]].append(dict(row))
    with transaction.atomic():
        totals, patients = _lock_fresh_packages(list(by_package))
        _refuse_unknown_references(by_package, patients)
        live_uses_of_line: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for package_id, entries in by_package.items():
            entries.sort(key=lambda r: r["seq"])
            _check_replay(package_id, entries, totals[package_id], live_uses_of_line)
        for line_id, uses in live_uses_of_line.items():
            if len(uses) > 1:
                raise Invalid(f"Invoice line {line_id} would have {len(uses)} live uses; it may have one.",
                              fields={"rows": "two live uses of one line"})
        _refuse_lines_held_elsewhere(by_package)
        ids: dict[tuple[int, int], int] = {}
        for batch in _insert_rounds(by_package):
            created = PackageLedgerEntry.objects.bulk_create([
                PackageLedgerEntry(
                    patient_package_id=pid, seq=row["seq"], kind=row["kind"], change=row["change"],
                    used_after=row["used_after"], sessions_total=totals[pid], at=row["at"],
                    invoice_line_id=row.get("invoice_line_id"), appointment_id=row.get("appointment_id"),
                    reverses_id=ids[(pid, row["reverses_seq"])] if row["kind"] == EntryKind.REVERSAL else None,
                    reason=row.get("reason", ""), by_id=row.get("by_id"),
                )
                for pid, row in batch
            ], batch_size=2000)
            ids.update(((pid, row["seq"]), entry.pk) for (pid, row), entry in zip(batch, created, strict=True))
        PatientPackage.objects.bulk_update(
            [PatientPackage(pk=pid, sessions_used=es[-1]["used_after"], ledger_seq=len(es))
             for pid, es in by_package.items() if es],
            ["sessions_used", "ledger_seq"], batch_size=1000,
        )
    return len(ids)


def _refuse_lines_held_elsewhere(by_package: Mapping[int, list[dict]]) -> None:
    """A line the import uses must not hold a live use already (in a package outside the
    import: those in it have no entries yet): the two would count one charge twice."""
    used_lines = sorted({row["invoice_line_id"] for rows in by_package.values() for row in rows
                         if row["kind"] == EntryKind.USE and row.get("invoice_line_id") is not None})
    for start in range(0, len(used_lines), 5000):
        chunk = used_lines[start:start + 5000]
        held = PackageLedgerEntry.objects.filter(invoice_line_id__in=chunk, kind=EntryKind.USE,
                                                 reversed_by__isnull=True).values_list(
            "invoice_line_id", "patient_package_id").first()
        if held is not None:
            raise Invalid(f"Invoice line {held[0]} already has a live use, in package {held[1]}; an import "
                          "cannot use it again.", fields={"rows": "a line with a live use"})


def _insert_rounds(by_package: Mapping[int, list[dict]]) -> Iterator[list[tuple[int, dict]]]:
    """The rows in batches that the database takes in order: each package's rows in seq order,
    one per batch (a reversal's target, a lower seq, has its id already), and a use of a line
    only once no other package holds a live use of it: a line moved from one package to another
    is used by the second after the first's reversal, whatever their seqs. The rows replayed
    cleanly and end with one live use per line; rows that still cannot be put in an order where
    a line has one live use at a time are refused."""
    next_row = dict.fromkeys(by_package, 0)
    live: dict[int, int] = {}  # line -> the package holding its live use, as inserted so far
    while next_row:
        batch: list[tuple[int, dict]] = []
        taken: set[int] = set()
        for pid, index in list(next_row.items()):
            row = by_package[pid][index]
            line = row.get("invoice_line_id")
            if row["kind"] == EntryKind.USE and line is not None:
                if line in live or line in taken:
                    continue  # waits for the reversal that frees the line
                taken.add(line)
            batch.append((pid, row))
        if not batch:
            raise Invalid("Some invoice lines would have two live uses at once whatever the order of the "
                          "packages' entries.", fields={"rows": "two live uses of one line"})
        yield batch
        for pid, row in batch:
            line = row.get("invoice_line_id")
            if row["kind"] == EntryKind.USE and line is not None:
                live[line] = pid
            elif row["kind"] == EntryKind.REVERSAL:
                target = by_package[pid][row["reverses_seq"] - 1]
                if target.get("invoice_line_id") is not None and live.get(target["invoice_line_id"]) == pid:
                    del live[target["invoice_line_id"]]
            next_row[pid] += 1
            if next_row[pid] == len(by_package[pid]):
                del next_row[pid]


def _lock_fresh_packages(package_ids: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Lock the packages; refuse any that is missing or already has entries. Returns their
    totals and their patients."""
    totals: dict[int, int] = {}
    patients: dict[int, int] = {}
    for start in range(0, len(package_ids), 5000):
        chunk = package_ids[start:start + 5000]
        for pp in PatientPackage.objects.select_for_update().filter(pk__in=chunk).values(
            "pk", "sessions_total", "sessions_used", "ledger_seq", "patient_id"
        ):
            if pp["ledger_seq"] or pp["sessions_used"]:
                raise Conflict(f"Package {pp['pk']} already has ledger entries; an import only fills empty ones.")
            totals[pp["pk"]] = pp["sessions_total"]
            patients[pp["pk"]] = pp["patient_id"]
    missing = sorted(set(package_ids) - set(totals))
    if missing:
        raise Invalid(f"No such patient package: {missing[0]}.", fields={"patient_package_id": "not found"})
    return totals, patients


def _refuse_unknown_references(by_package: Mapping[int, list[dict]], patients: Mapping[int, int]) -> None:
    """Every invoice line and visit an entry names exists and is its package's patient's, and
    every staff member exists: otherwise the database refused the import only at its commit (a
    foreign key error, not a refusal naming the row), or a package counted another patient's
    charge."""
    named: dict[str, dict[int, set[int]]] = {"invoice_line_id": defaultdict(set), "appointment_id": defaultdict(set)}
    staff: set[int] = set()
    for package_id, rows in by_package.items():
        for row in rows:
            for field, ids in named.items():
                if row.get(field) is not None:
                    ids[row[field]].add(patients[package_id])
            if row.get("by_id") is not None:
                staff.add(row["by_id"])
    owners = {
        "invoice_line_id": _owners(InvoiceLine.objects.all(), "invoice__patient_id", named["invoice_line_id"]),
        "appointment_id": _owners(Appointment.all_objects.all(), "patient_id", named["appointment_id"]),
    }
    for field, ids in named.items():
        for pk, wanted in sorted(ids.items()):
            if pk not in owners[field]:
                raise Invalid(f"No such {field.removesuffix('_id').replace('_', ' ')}: {pk}.", fields={field: "not found"})
            if wanted != {owners[field][pk]}:
                raise Invalid(f"The {field.removesuffix('_id').replace('_', ' ')} {pk} is another patient's.",
                              fields={field: "another patient's"})
    known = _owners(Staff.objects.all(), "pk", dict.fromkeys(staff))
    unknown = sorted(staff - set(known))
    if unknown:
        raise Invalid(f"No such staff member: {unknown[0]}.", fields={"by_id": "not found"})


def _owners(rows: QuerySet, owner: str, ids: Iterable[int]) -> dict[int, int]:
    """pk -> `owner` for the rows with these ids, in chunks."""
    wanted = sorted(ids)
    found: dict[int, int] = {}
    for start in range(0, len(wanted), 5000):
        found.update(rows.filter(pk__in=wanted[start:start + 5000]).values_list("pk", owner))
    return found


def _refuse(package_id: int, seq: int, problem: str) -> NoReturn:
    raise Invalid(f"Package {package_id}, entry {seq}: {problem}.", fields={"rows": problem})


def _check_replay(package_id: int, rows: list[dict], total: int,
                  live_uses_of_line: dict[int, set[tuple[int, int]]]) -> None:
    """Replay one package's rows as post_entry would have written them; refuse any fault."""
    used = 0
    kinds: dict[int, str] = {}
    lines: dict[int, int | None] = {}
    reversed_seqs: set[int] = set()
    for expected_seq, row in enumerate(rows, start=1):
        seq, kind, change = row["seq"], row["kind"], row["change"]
        refuse: Callable[[str], NoReturn] = functools.partial(_refuse, package_id, seq)
        if seq != expected_seq:
            refuse(f"expected seq {expected_seq}: entries are numbered 1..n without gaps")
        if not isinstance(change, int) or isinstance(change, bool):  # True is 1 to Python, not a count
            refuse("a change is a whole number")
        if kind == EntryKind.USE and change != -1:
            refuse("a use changes the count by -1")
        elif kind == EntryKind.REVERSAL:
            target = row.get("reverses_seq")
            if change != 1:
                refuse("a reversal changes the count by +1")
            if target is None or kinds.get(target) != EntryKind.USE:
                refuse("a reversal must point at an earlier use of the same package")
            if target in reversed_seqs:
                refuse(f"use {target} is already reversed")
            reversed_seqs.add(target)
        elif kind == EntryKind.ADJUSTMENT and change == 0:
            refuse("an adjustment changes the count by a whole number other than 0")
        elif kind not in EntryKind.values:
            refuse(f"unknown kind {kind!r}")
        if kind != EntryKind.REVERSAL and row.get("reverses_seq") is not None:
            refuse("only a reversal points at another entry")
        used -= change
        if not 0 <= used <= total:
            refuse(f"the count would be {used} of {total}")
        if row.get("used_after", used) != used:
            refuse(f"used_after says {row['used_after']}, the replay gives {used}")
        row["used_after"] = used
        kinds[seq], lines[seq] = kind, row.get("invoice_line_id")
        if kind == EntryKind.REVERSAL and (reversed_line := lines[row["reverses_seq"]]) is not None:
            live_uses_of_line[reversed_line].discard((package_id, row["reverses_seq"]))
        elif kind == EntryKind.USE and (used_line := lines[seq]) is not None:
            live_uses_of_line[used_line].add((package_id, seq))


# --- verify: re-derive every package from its entries (beancount's balance assertions) ---


@dataclass(frozen=True)
class LedgerProblem:
    patient_package_id: int
    message: str


def replay(entries: list[PackageLedgerEntry], sessions_total: int) -> tuple[int, list[str]]:
    """Replay entries in seq order; return the derived used count and what is wrong."""
    problems: list[str] = []
    used = 0
    reversed_ids: set[int] = set()
    by_id = {e.pk: e for e in entries}
    for expected_seq, entry in enumerate(entries, start=1):
        if entry.seq != expected_seq:
            problems.append(f"entry {entry.pk} has seq {entry.seq}, expected {expected_seq}")
        used -= entry.change
        if entry.used_after != used:
            problems.append(f"entry {entry.pk} says {entry.used_after} used after it, replay gives {used}")
        if not 0 <= used <= sessions_total:
            problems.append(f"after entry {entry.pk} the count is {used} of {sessions_total}")
        if entry.kind == EntryKind.REVERSAL:
            target = by_id.get(entry.reverses_id or -1)
            if target is None or target.kind != EntryKind.USE:
                problems.append(f"reversal {entry.pk} does not point at a use of this package")
            elif target.pk in reversed_ids:
                problems.append(f"use {target.pk} is reversed twice")
            else:
                reversed_ids.add(target.pk)
    return used, problems


def verify(package_ids: list[int] | None = None) -> list[LedgerProblem]:
    """Every package whose cached count or entries do not replay cleanly, with why."""
    packages = PatientPackage.objects.all()
    if package_ids is not None:
        packages = packages.filter(pk__in=package_ids)
    entries_by_package: dict[int, list[PackageLedgerEntry]] = {}
    entry_qs = PackageLedgerEntry.objects.order_by("patient_package_id", "seq")
    if package_ids is not None:
        entry_qs = entry_qs.filter(patient_package_id__in=package_ids)
    for entry in entry_qs.iterator(chunk_size=5000):
        entries_by_package.setdefault(entry.patient_package_id, []).append(entry)
    problems: list[LedgerProblem] = []
    for pp in packages.only("id", "sessions_used", "sessions_total", "ledger_seq").iterator(chunk_size=2000):
        entries = entries_by_package.get(pp.pk, [])
        used, found = replay(entries, pp.sessions_total)
        if used != pp.sessions_used:
            found.append(f"cached count says {pp.sessions_used} used, the ledger gives {used}")
        if len(entries) != pp.ledger_seq:
            found.append(f"package says {pp.ledger_seq} entries, the ledger has {len(entries)}")
        problems.extend(LedgerProblem(pp.pk, message) for message in found)
    # At most one live use per invoice line, across packages.
    live_uses: dict[int, int] = {}
    reversed_ids = {e.reverses_id for es in entries_by_package.values() for e in es if e.reverses_id}
    for es in entries_by_package.values():
        for e in es:
            if e.kind == EntryKind.USE and e.invoice_line_id and e.pk not in reversed_ids:
                if e.invoice_line_id in live_uses:
                    problems.append(LedgerProblem(e.patient_package_id, f"invoice line {e.invoice_line_id} has two live uses"))
                live_uses[e.invoice_line_id] = e.pk
    return problems
