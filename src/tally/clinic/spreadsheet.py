"""CSV that a spreadsheet opens as data, never as formulas (OWASP "CSV Injection").

Excel, LibreOffice and Google Sheets run a cell that begins with `=`, `+`, `-` or `@` as a
formula, and some also after leading white space (a tab, a carriage return, a space or a new
line, which an import may trim), or with the full-width forms of those signs, which a
Japanese or Chinese input method types and some spreadsheets read as formulas: a package or patient named
`=HYPERLINK(...)` would become a link or a command in the clinic's spreadsheet. Such text
cells get a leading single quote, as OWASP recommends; numbers (ints, Decimals) are written
as they are, so a count or an amount stays a number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would run, quoted; anything else unchanged."""
    if isinstance(value, str) and (value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS)):
        return "'" + value
    return value


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


class SafeWriter:
    """csv.writer whose text cells are made safe with `safe_cell`."""

    def __init__(self, stream: TextSink, **kwargs: Any):
        self._writer = csv.writer(stream, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(value) for value in row])
