"""What the server writes to its logs holds no patient data: query strings carry names
(`/patients/?q=Smith`, `GET /api/v1/patients?q=`), free-text reasons (`DELETE
/api/v1/appointments/{id}?reason=`) and ids, and the access log is kept and shipped apart
from the database, where no audit or access control covers it."""

from __future__ import annotations

import datetime as dt
import io
import logging

from gunicorn.config import Config
from gunicorn.glogging import Logger

from tally.server import gunicorn_options


class Answer:
    status = "200 OK"
    headers: list[tuple[str, str]] = []
    sent = 1234


class Request:
    headers = [("HOST", "clinic.example"), ("REFERER", "https://clinic.example/patients/?q=Margaret+Oyelaran")]


def access_line(path: str, query: str) -> str:
    config = Config()
    for key, value in gunicorn_options("127.0.0.1", 8000, 1).items():
        if key in config.settings:
            config.set(key, value)
    logger = Logger(config)
    out = io.StringIO()
    logger.access_log.handlers = [logging.StreamHandler(out)]
    environ = {
        "REQUEST_METHOD": "GET", "RAW_URI": f"{path}?{query}", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7", "HTTP_USER_AGENT": "Firefox",
        "HTTP_REFERER": "https://clinic.example/patients/?q=Margaret+Oyelaran",
    }
    logger.access(Answer(), Request(), environ, dt.timedelta(milliseconds=12))
    return out.getvalue()


def test_the_access_log_leaves_out_query_strings_and_referrers():
    line = access_line("/api/v1/patients", "q=Oyelaran&limit=5")
    assert "GET /api/v1/patients HTTP/1.1" in line
    assert " 200 " in line and "10.0.0.7" in line
    assert "Oyelaran" not in line  # neither the request's query string nor the page it came from
    assert "q=" not in line


def test_the_access_log_leaves_out_a_deletion_reason():
    line = access_line("/api/v1/appointments/41", "reason=Patient+died")
    assert "/api/v1/appointments/41" in line
    assert "died" not in line
