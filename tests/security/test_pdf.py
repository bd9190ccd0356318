"""The invoice PDF is made from Tally's own HTML alone: WeasyPrint fetches nothing, neither
a URL on another host (the server as a proxy into the clinic's network) nor a local file
(file:///etc/passwd drawn into a patient's PDF), nor this server itself, whatever a template
names now or later."""

from __future__ import annotations

import urllib.request

import pytest

from tally.staff.views.invoices import html_to_pdf


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every URL WeasyPrint's fetcher hands to urllib."""
    seen: list[str] = []
    real_open = urllib.request.OpenerDirector.open

    def recording_open(self, url, *args, **kwargs):
        seen.append(url if isinstance(url, str) else url.full_url)
        return real_open(self, url, *args, **kwargs)

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", recording_open)
    return seen


def test_the_pdf_renderer_fetches_no_url_and_no_file(opened, tmp_path):
    secret = tmp_path / "secret.css"
    secret.write_text("body { color: red }")
    html = (f'<html><head><link rel="stylesheet" href="file://{secret}">'
            '<link rel="stylesheet" href="/static/staff/site.css"></head>'
            '<body><img src="http://10.0.0.1/internal.png">'
            '<p style="background: url(https://example.com/track.png)">Invoice</p></body></html>')
    pdf = html_to_pdf(html, "http://127.0.0.1:8000/")
    assert pdf.startswith(b"%PDF")
    assert opened == []


def test_the_pdf_renderer_still_draws_inline_images():
    pixel = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
             "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    assert html_to_pdf(f'<html><body><img src="{pixel}"></body></html>', "http://127.0.0.1:8000/").startswith(b"%PDF")
