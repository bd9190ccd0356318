"""kill -9 of the whole server (gunicorn master and workers) in the middle of a stream of
check-ins, payments, voids and line adds; then restart on the same database and check that
nothing is torn, nothing answered is lost, and every request retried with its
Idempotency-Key is done exactly once."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import scratch_database_url

from .conftest import Client, ServerProcess, create_owner_token, db_counts, run_tally, tally_env
from .stream import Sent, Stream, seed_clinic

CLIENT_THREADS = 3


def check_present(client: Client, sent: Sent) -> None:
    """A 2xx answer is in the database, in the state it described (later steps never undo it)."""
    body = sent.answer.body
    if sent.kind == "book":
        assert client.ok("GET", f"/api/v1/appointments/{body['id']}")["id"] == body["id"]
    elif sent.kind == "check_in":
        assert client.ok("GET", f"/api/v1/appointments/{body['appointment']['id']}")["status"] == "attended"
        invoice = client.ok("GET", f"/api/v1/invoices/{body['invoice']['id']}")
        assert body["line"]["id"] in [line["id"] for line in invoice["lines"]]
    elif sent.kind == "add_line":
        invoice_id = sent.path.split("/")[4]
        assert body["id"] in [line["id"] for line in client.ok("GET", f"/api/v1/invoices/{invoice_id}")["lines"]]
    elif sent.kind == "payment":
        invoice_id = sent.path.split("/")[4]
        assert body["id"] in [p["id"] for p in client.ok("GET", f"/api/v1/invoices/{invoice_id}")["payments"]]
    elif sent.kind == "void":
        assert client.ok("GET", f"/api/v1/invoices/{body['id']}")["status"] == "void"
    else:  # pragma: no cover
        raise AssertionError(sent.kind)


def retry_all(client: Client, sent: list[Sent]) -> list:
    """Every request again with its key: each stream thread's requests in their order, the
    threads side by side (as their clients would retry)."""
    by_thread: dict[int, list[int]] = {}
    for i, s in enumerate(sent):
        by_thread.setdefault(s.thread, []).append(i)
    answers: list = [None] * len(sent)

    def retry(indexes: list[int]) -> None:
        for i in indexes:
            answers[i] = client.call(sent[i].method, sent[i].path, sent[i].body, sent[i].key)

    with ThreadPoolExecutor(len(by_thread)) as pool:
        list(pool.map(retry, by_thread.values()))
    return answers


def test_kill_9_mid_stream_loses_nothing_and_retries_apply_once(tmp_path, static_root):
    started = time.monotonic()
    with scratch_database_url(tmp_path) as url:
        env = tally_env(url, tmp_path) | {"TALLY_STATIC_ROOT": str(static_root)}
        run_tally(env, "init")
        token = create_owner_token(env)
        server = ServerProcess(tmp_path, env, workers=2)
        try:
            server.start()
            client = Client(server, token, timeout=20)
            clinic = seed_clinic(client, patients=CLIENT_THREADS)
            stream = Stream(client, clinic, seed=20261127)
            stream.start()
            # Kill at a point that is not a round number of requests: 4 to 6 s in.
            time.sleep(random.Random(20261127).uniform(4.0, 6.0))
            server.kill9()
            sent = stream.finish()

            answered = [s for s in sent if s.answer.status is not None]
            unanswered = [s for s in sent if s.answer.status is None]
            ok = [s for s in sent if s.ok]
            assert len(ok) >= 30, f"too little traffic before the kill: {len(ok)} answered"
            assert all(s.ok for s in answered), [(s.kind, s.answer) for s in answered if not s.ok][:5]
            assert len(unanswered) <= CLIENT_THREADS  # each thread stops at its first lost answer

            server.start()  # same database, same port

            verified = run_tally(env, "verify", check=False)
            assert verified.returncode == 0, verified.stdout + verified.stderr

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda s: check_present(client, s), ok))

            before_retry = db_counts(env)
            first = retry_all(client, sent)
            for s, again in zip(sent, first, strict=True):
                assert again.status is not None and 200 <= again.status < 300, (s.kind, s.path, again)
                if s.ok:
                    assert again.headers.get("idempotent-replayed") == "true", (s.kind, again)
                    assert (again.status, again.body) == (s.answer.status, s.answer.body), s.kind
            after_first = db_counts(env)
            # Only the requests that never got an answer may have done anything now.
            performed = [s for s, again in zip(sent, first, strict=True)
                         if not s.ok and again.headers.get("idempotent-replayed") != "true"]
            if not performed:
                assert after_first == before_retry

            second = retry_all(client, sent)
            for s, one, two in zip(sent, first, second, strict=True):
                assert (two.status, two.body) == (one.status, one.body), s.kind
                assert two.headers.get("idempotent-replayed") == "true", (s.kind, two)
            assert db_counts(env) == after_first

            verified = run_tally(env, "verify", check=False)
            assert verified.returncode == 0, verified.stdout + verified.stderr
            # The audit log too: no event of a request cut off by the kill breaks the hash chain.
            chained = run_tally(env, "verify-audit", check=False)
            assert chained.returncode == 0 and "chain intact" in chained.stdout, chained.stdout + chained.stderr
            kinds = {k: sum(1 for s in ok if s.kind == k) for k in ("book", "check_in", "add_line", "payment", "void")}
            print(f"\n[crash] {len(ok)} answered before kill -9 {kinds}; {len(unanswered)} in flight "
                  f"({len(unanswered) - len(performed)} had committed, {len(performed)} done on retry); "
                  f"{after_first}; {time.monotonic() - started:.1f} s")
        finally:
            server.stop()
