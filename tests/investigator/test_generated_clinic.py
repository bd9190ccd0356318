"""The synthetic clinic of bench/generate.py, small: every finding kind injected at a known
place, and the clinic audit finds exactly what was injected (100% recall and precision)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tally.clinic.ledger import verify

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_audit_finds_every_injected_discrepancy_and_nothing_else(db, monkeypatch):
    monkeypatch.setenv("TALLY_BENCH_QUIET", "1")
    generate, bench = load("generate"), load("investigator")
    truth = generate.generate(generate.SMALL)
    injected = {code for codes in truth["packages"].values() for code in codes}
    assert injected == set(generate.CODES), "the small clinic injects every finding kind"
    # Only the injected raw UPDATEs disagree with the ledger: the import replayed cleanly.
    faulty = {problem.patient_package_id for problem in verify()}
    assert faulty == {int(pk) for pk, codes in truth["packages"].items() if "LEDGER_MISMATCH" in codes}

    _, rows = bench.time_audit()
    score = bench.score(truth, rows)
    assert score["missed"] == [] and score["extra"] == [] and score["warnings_on_clean"] == []
    assert (score["recall"], score["precision"]) == (1.0, 1.0)
