"""A stream of clinic writes, each POST with its own Idempotency-Key, recorded for replay:
book, check in, add a line, pay the balance, void. One patient per client thread, so that
each thread's next step can depend on the answers it got."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .conftest import Answer, Client


@dataclass
class Sent:
    thread: int
    seq: int
    kind: str
    method: str
    path: str
    body: Any
    key: str
    answer: Answer

    @property
    def ok(self) -> bool:
        return self.answer.status is not None and 200 <= self.answer.status < 300


@dataclass
class Clinic:
    covered_service: int
    other_service: int
    package: int
    patients: list[int]


def seed_clinic(client: Client, patients: int, sessions: int = 500) -> Clinic:
    acu = client.ok("POST", "/api/v1/services", {"name": "Acupuncture 60 min", "duration_minutes": 60, "price": "95.00"})
    massage = client.ok("POST", "/api/v1/services", {"name": "Massage 30 min", "duration_minutes": 30, "price": "55.00"})
    package = client.ok("POST", "/api/v1/packages", {"name": "Big acupuncture pack", "price": "900.00",
                                                     "sessions": sessions, "service_ids": [acu["id"]]})
    ids = []
    for i in range(patients):
        patient = client.ok("POST", "/api/v1/patients", {"first_name": f"Fault{i}", "last_name": "Patient"})
        client.ok("POST", f"/api/v1/patients/{patient['id']}/packages",
                  {"package_id": package["id"], "use_first_session": False, "sold_at": "2026-01-05",
                   "payment": {"amount": "900.00", "method": "card"}})
        ids.append(patient["id"])
    return Clinic(acu["id"], massage["id"], package["id"], ids)


@dataclass
class Stream:
    client: Client
    clinic: Clinic
    seed: int = 7
    sent: list[Sent] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def post(self, thread: int, seq: int, kind: str, path: str, body: Any) -> Sent:
        key = f"fault-{thread}-{seq}-{uuid.uuid4().hex[:8]}"
        answer = self.client.call("POST", path, body, key)
        sent = Sent(thread, seq, kind, "POST", path, body, key, answer)
        with self.lock:
            self.sent.append(sent)
        return sent

    def run_thread(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        patient = self.clinic.patients[index]
        base = dt.datetime(2026, 2, 2, 8, 0, tzinfo=dt.UTC) + dt.timedelta(days=30 * index)
        seq = 0

        def step(kind: str, path: str, body: Any) -> Sent | None:
            nonlocal seq
            seq += 1
            sent = self.post(index, seq, kind, path, body)
            # No answer: the server is gone. A refusal: the stream's own bug. Stop either way.
            return sent if sent.ok else None

        visit = 0
        while not self.stop.is_set():
            visit += 1
            service = self.clinic.covered_service if rng.random() < 0.6 else self.clinic.other_service
            starts = base + dt.timedelta(minutes=90 * visit)
            booked = step("book", "/api/v1/appointments",
                          {"patient_id": patient, "service_id": service, "starts_at": starts.isoformat()})
            if booked is None:
                return
            checked = step("check_in", f"/api/v1/appointments/{booked.answer.body['id']}/check-in", {})
            if checked is None:
                return
            invoice = checked.answer.body["invoice"]
            balance = Decimal(invoice["balance"])
            if rng.random() < 0.4:
                extra = rng.choice([self.clinic.covered_service, self.clinic.other_service])
                added = step("add_line", f"/api/v1/invoices/{invoice['id']}/lines", {"service_id": extra})
                if added is None:
                    return
                balance += Decimal(added.answer.body["amount"])
            roll = rng.random()
            if balance > 0 and roll < 0.6:
                part = (balance / 2).quantize(Decimal("0.01")) if rng.random() < 0.3 else balance
                if step("payment", f"/api/v1/invoices/{invoice['id']}/payments",
                        {"amount": str(part), "method": rng.choice(["card", "cash"])}) is None:
                    return
            elif roll > 0.75:
                if step("void", f"/api/v1/invoices/{invoice['id']}/void", {"reason": "entered by mistake"}) is None:
                    return

    def start(self) -> None:
        for index in range(len(self.clinic.patients)):
            thread = threading.Thread(target=self.run_thread, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "stream threads did not stop"

    def finish(self) -> list[Sent]:
        self.stop.set()
        self.join()
        return sorted(self.sent, key=lambda s: (s.thread, s.seq))
