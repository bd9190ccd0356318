"""Security headers: a Content-Security-Policy with nothing inline, the usual hardening headers,
HTTPS-only settings switched by TALLY_HTTPS, and `check --deploy` clean in production."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import tally

TEMPLATES = [p for p in Path(tally.__file__).parent.rglob("templates/**/*.html")]


def test_every_page_has_a_strict_content_security_policy(desk_client):
    response = desk_client.get("/today/")
    policy = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"


def test_the_hardening_headers_are_sent(desk_client):
    response = desk_client.get("/today/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_the_api_and_its_docs_have_the_policy_too(desk_client):
    assert "default-src 'self'" in desk_client.get("/api/v1/docs")["Content-Security-Policy"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_template_has_inline_script_or_handlers(template):
    text = template.read_text()
    assert not re.search(r"\son[a-z]+\s*=", text), "inline event handler: use data-confirm/data-print or htmx"
    for tag in re.findall(r"<script\b[^>]*>", text):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    for tag in re.findall(r"<style\b[^>]*>", text):
        assert "nonce=" in tag, f"{tag}: give it the page's nonce"
    assert "javascript:" not in text


def test_the_printable_pages_style_carries_the_nonce_of_the_policy(desk_client, charged_visit):
    _, invoice, _ = charged_visit
    response = desk_client.get(f"/invoices/{invoice.pk}/print/")
    assert response.status_code == 200
    nonce = re.search(rb'<style nonce="([^"]+)">', response.content).group(1).decode()
    assert f"'nonce-{nonce}'" in response["Content-Security-Policy"]
    assert b"onclick" not in response.content and b"data-print" in response.content


def test_the_confirm_before_a_fix_is_a_data_attribute_handled_by_a_static_script(desk_client):
    base = desk_client.get("/today/").content.decode()
    assert "/static/staff/behaviour.js" in base


# --- production settings, in a fresh interpreter as `tally serve` would load them ----------------


def production_env(**overrides: str) -> dict[str, str]:
    # Nothing of the test run's: not its TALLY_* settings, nor DJANGO_ALLOW_ASYNC_UNSAFE, which the
    # browser tests set (and which check --deploy rightly warns about).
    skip = {"DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_") and k not in skip}
    env.update({"DJANGO_SETTINGS_MODULE": "tally.settings", "TALLY_SECRET_KEY": secrets.token_urlsafe(64),
                "TALLY_DATABASE_URL": "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "tally-deploy.sqlite3")})
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def django(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def setting(names: str, env: dict[str, str], tmp_path: Path) -> str:
    code = f"from django.conf import settings; print(*[getattr(settings, n) for n in {names.split()!r}])"
    done = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_check_deploy_passes_with_production_settings(tmp_path):
    done = django(["check", "--deploy", "--fail-level", "WARNING"], production_env(TALLY_HTTPS="1"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_https_switches_on_secure_cookies_hsts_and_the_redirect(tmp_path):
    values = setting("SESSION_COOKIE_SECURE CSRF_COOKIE_SECURE SECURE_SSL_REDIRECT SECURE_HSTS_SECONDS",
                     production_env(TALLY_HTTPS="1"), tmp_path)
    assert values == "True True True 31536000"


def test_plain_http_serving_keeps_cookies_usable_for_the_demo(tmp_path):
    values = setting("SESSION_COOKIE_SECURE CSRF_COOKIE_SECURE SECURE_SSL_REDIRECT SECURE_HSTS_SECONDS DEBUG",
                     production_env(), tmp_path)
    assert values == "False False False 0 False"


def test_production_hashes_passwords_with_argon2(tmp_path):
    assert setting("PASSWORD_HASHERS", production_env(), tmp_path).startswith(
        "['django.contrib.auth.hashers.Argon2PasswordHasher'")


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env()
    del env["TALLY_SECRET_KEY"]
    done = django(["check"], env, tmp_path)
    assert done.returncode != 0 and "TALLY_SECRET_KEY must be set" in done.stderr


def test_tally_testing_set_outside_the_test_suite_changes_nothing(tmp_path):
    """The test settings (a fast MD5 password hasher first, so every new or re-hashed password is
    stored as unsalted MD5, and a public fallback secret key, so anyone can sign session cookies)
    apply inside pytest only: TALLY_TESTING=1 left in a server's environment must not weaken it."""
    env = production_env(TALLY_TESTING="1")
    assert setting("PASSWORD_HASHERS", env, tmp_path).startswith("['django.contrib.auth.hashers.Argon2PasswordHasher'")
    del env["TALLY_SECRET_KEY"]
    done = django(["check"], env, tmp_path)
    assert done.returncode != 0 and "TALLY_SECRET_KEY must be set" in done.stderr


def never_stored(response) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_pages_and_answers_with_patient_data_are_never_stored_by_the_browser(desk, desk_client, charged_visit):
    """A shared front-desk computer: after signing out, Back must not bring a chart, an
    invoice or an export back from the browser's cache (nor may any cache keep them)."""
    from tally.clinic.models import ApiToken

    _, invoice, _ = charged_visit
    patient_id = invoice.patient_id
    for url in ("/today/", f"/patients/{patient_id}/", f"/patients/{patient_id}/export.json",
                f"/invoices/{invoice.pk}/pdf/", "/audit/?severity=info"):
        response = desk_client.get(url)
        assert response.status_code == 200, url
        assert never_stored(response), (url, response.get("Cache-Control"))
    _, raw = ApiToken.issue(desk)
    api = desk_client.get(f"/api/v1/patients/{patient_id}", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 200 and never_stored(api), api.get("Cache-Control")


def test_static_files_stay_cacheable(client):
    response = client.get("/static/staff/behaviour.js")
    assert response.status_code == 200 and not never_stored(response)


def test_a_production_server_answers_only_the_host_names_the_readme_lists(tmp_path):
    """`testserver` is the Django test client's name; the test runner allows it by itself, and a
    production default that allowed it too answered a Host header nobody serves."""
    env = production_env()
    env.pop("TALLY_ALLOWED_HOSTS", None)
    assert setting("ALLOWED_HOSTS", env, tmp_path) == "['localhost', '127.0.0.1', '[::1]']"


def test_a_message_naming_a_patient_stays_on_the_server(desk_client, charged_visit):
    """Django's default message store is a cookie: "Maria Lopez's visit is booked again" went to
    the browser base64-encoded (signed, not encrypted), in every request's Cookie header until
    shown, and outlived signing out. The messages live in the session, which signing out ends."""
    appointment, _, _ = charged_visit
    done = desk_client.post(f"/appointments/{appointment.pk}/undo-check-in/", {"reason": ""})
    assert done.status_code == 302
    assert "messages" not in done.cookies
    page = desk_client.get(done["Location"])
    assert f"{appointment.patient.full_name}&#x27;s visit is booked again" in page.content.decode()
