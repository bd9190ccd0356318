"""Reading a request: JSON bodies and query strings that mean one thing only.

A body is read as JSON whatever its Content-Type says, as it always was: API.md's
contract is "JSON in", and clients that send JSON without the header (curl -d, a script's
plain POST) were answered as documented; refusing them now would break them.

A JSON object that names a key twice, or a query string that gives a parameter twice,
is read differently by different parsers (first wins, last wins, a list), so what a
proxy or the client's own logs saw may not be what Tally did. Both are refused with a
422 naming the key, instead of silently keeping the last value.

A query parameter given empty (`?from=&to=&status=`, as API.md writes these lists, and as a
filter form left blank sends them) is as if it were not given: no filter, the default, or
"required" when it must be given.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from ninja.parser import Parser

from tally.clinic.errors import Invalid


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice")
        self.key = key


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


class StrictParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        # ninja turns any exception here into HttpError(400) with this one as its cause;
        # api.http_error names a DuplicateKey.
        return json.loads(request.body, object_pairs_hook=refuse_duplicate_keys)

    def parse_querydict(self, data: MultiValueDict, list_fields: list[str], request: HttpRequest) -> dict[str, Any]:
        for key, values in data.lists():
            if len(values) > 1 and key not in list_fields:
                raise Invalid(f"The query parameter {key!r} is given {len(values)} times; give it once.",
                              fields={key: "give it once"})
        given = {key for key, values in data.lists() if values != [""]}
        return {key: value for key, value in super().parse_querydict(data, list_fields, request).items()
                if key in given}
