"""Helpers for tests that run the real `tally` command and server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

TALLY = str(Path(sys.executable).parent / "tally")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    env: dict[str, str]
    database_url: str

    def tally(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([TALLY, *args], env=self.env, capture_output=True, text=True, timeout=120,
                              check=check)


@contextlib.contextmanager
def scratch_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of the same kind as the test run's, private to one server."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        yield f"sqlite:///{tmp_path / 'server.sqlite3'}"
        return
    import psycopg

    db = settings.DATABASES["default"]
    name = f"tally_e2e_{uuid.uuid4().hex[:10]}"
    conninfo = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_server(tmp_path: Path, database_url: str, workers: int = 2) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_SECRET_KEY": "e2e-" + uuid.uuid4().hex,
        "TALLY_DEBUG": "",
        # Shared by every server a run starts: collecting (and compressing) static files
        # once is enough, and `tally serve` only collects again when they changed.
        "TALLY_STATIC_ROOT": str(Path(tempfile.gettempdir()) / f"tally-test-static-{os.getuid()}"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = Server(url=f"http://127.0.0.1:{port}", env=env, database_url=database_url)
    server.tally("init")
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([TALLY, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("tally serve exited:\n" + (tmp_path / "server.log").read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("tally serve did not start in 180 s")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def live_server_process(tmp_path) -> Iterator[Server]:
    with scratch_database_url(tmp_path) as url, running_server(tmp_path, url) as server:
        yield server


# --- Browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's live_server ---

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
DOC_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
STAFF_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def chromium_browser():
    """One headless Chromium for the whole session (Debian's, not a Playwright download)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium): browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    # The tests use the ORM between browser steps while Playwright's event loop runs in this thread.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def browser_page(request, chromium_browser, live_server, triggers_off_for_flush):
    """A fresh context and page per test at 1280x900; a screenshot is kept when the test fails,
    and a JavaScript error on any page fails the test."""
    context = chromium_browser.new_context(viewport=VIEWPORT, base_url=live_server.url, locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def sign_in(page, username: str, password: str = STAFF_PASSWORD) -> None:
    """Through the real /login/ form."""
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/today/**")


def htmx_idle(page) -> None:
    """Wait until htmx has no request in flight and nothing left to swap or settle. A person
    does not change a filter in the few milliseconds a swap takes; a test does, and a change
    made mid-swap loses its event now and then."""
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """artifacts/screenshots/<name>.png (git-ignored), every run."""
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def update_doc_screenshot(page, name: str, *, full_page: bool = True) -> Path | None:
    """docs/screenshots/<name>.png for the README, only when TALLY_UPDATE_SCREENSHOTS=1 (CI never rewrites them)."""
    if os.environ.get("TALLY_UPDATE_SCREENSHOTS") != "1":
        return None
    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = DOC_SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
