"""Schemathesis hooks for the stateful scenarios (SCHEMATHESIS_HOOKS, set by test_schemathesis).

Every POST gets an Idempotency-Key of its own, as the clinic's clients send. Generated keys
repeat ("", "0"), and a repeated key with the same body replays the first answer by design
(API.md): a scenario that had meanwhile deleted that appointment then read the replayed id
back as "created but not found", which is the contract working, not a fault. Keys themselves
are fuzzed in the other phases (test_the_api_never_answers_5xx...); replays are tested in
tests/api/test_idempotent_replays.py."""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() == "POST":
        case.headers = {**(case.headers or {}), "Idempotency-Key": uuid.uuid4().hex}
