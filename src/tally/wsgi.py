"""The WSGI application `tally serve` runs (gunicorn), and any other WSGI server can."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tally.settings")


def with_chunked_bodies(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A request body sent with `Transfer-Encoding: chunked` has no Content-Length, and Django
    reads a body only as long as Content-Length says: an API client that streams its JSON got
    "body required". When the server has de-chunked the body (`wsgi.input_terminated`, as
    gunicorn does), read it here, at most one byte past Django's upload limit, and give Django
    its length; a longer body is then refused by Django as too large (413, tally.api.api)."""
    from django.conf import settings

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and not environ.get("CONTENT_LENGTH")
                and environ.get("wsgi.input_terminated")):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = environ["wsgi.input"].read(limit + 1 if limit is not None else -1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return application


application = with_chunked_bodies(get_wsgi_application())
