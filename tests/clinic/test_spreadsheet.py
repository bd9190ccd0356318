"""CSV exports: text a spreadsheet would run as a formula is quoted; numbers are left alone."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from tally.clinic.spreadsheet import SafeWriter, safe_cell


@pytest.mark.parametrize("text", ["=1+2", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x","y")',
                                  " =1+2", "\n=1", "\u00a0+1", "\uff1dHYPERLINK(1)", "\uff0b1", "\uff0d1", "\uff201"])
def test_text_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", [7, -3, 0, Decimal("-95.00"), Decimal("12.50"), None, "P-000123", "Acupuncture 60",
                                   "a=b", ""])
def test_numbers_and_harmless_text_are_written_as_they_are(value):
    assert safe_cell(value) == value


def test_the_writer_quotes_text_cells_only():
    out = io.StringIO()
    SafeWriter(out).writerow(["-5", -5, Decimal("-5.00"), "@me"])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'-5", "-5", "-5.00", "'@me"]
