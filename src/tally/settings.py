"""Settings from environment variables, SQLite by default (healthchecks style).

TALLY_DATABASE_URL  sqlite:///path or postgresql://user@host:port/db (default: ./tally.sqlite3)
TALLY_SECRET_KEY    required unless TALLY_DEBUG is on; it also keys the audit log's hash chain
TALLY_SECRET_KEY_FALLBACKS  comma-separated earlier secret keys, after a rotation (Django's
                    SECRET_KEY_FALLBACKS): sessions, tokens and audit events signed with one still
                    verify; new ones use TALLY_SECRET_KEY (`tally verify-audit` counts the events
                    each fallback signed; `tally rekey-audit` re-signs them so it can be dropped)
TALLY_DEBUG         "1"/"true" for development
TALLY_ALLOWED_HOSTS comma-separated (default: localhost,127.0.0.1,[::1])
TALLY_HTTPS         "1" when the site is served over HTTPS: secure cookies, HSTS, redirect to https
TALLY_BEHIND_PROXY  "1" behind a reverse proxy: the client's address is its X-Forwarded-For entry (the last),
                    and with TALLY_HTTPS its X-Forwarded-Proto is trusted
TALLY_SESSION_IDLE_MINUTES   sign out after this long without a request (default 15)
TALLY_SESSION_MAX_HOURS      sign out this long after signing in, active or not (default 12)
TALLY_TOKEN_MAX_HOURS        an API token from POST /api/v1/auth/token stops working this long after it
                             was issued (default 12); `tally createtoken` tokens do not expire unless
                             given --expires-hours. Stored on each token when issued: changing it
                             changes only the tokens issued afterwards
TALLY_SIGNIN_FAILURE_LIMIT   failed sign-ins per user name and address before a pause (default 5)
TALLY_SIGNIN_COOLOFF_MINUTES how long that pause lasts (default 15)
TALLY_OWNER_2FA_REQUIRED     owners must use two-factor sign-in (default on)
TALLY_CONN_MAX_AGE           seconds a database connection is kept (PostgreSQL 300, SQLite 0)
TALLY_SQLITE_QUEUE           "0" to let SQLite's writers wait in its busy handler alone, without the
                             queue in front of it (tally.db.sqlite3; default on; for measuring, or a
                             file system without flock)
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("TALLY_DEBUG")
# The test suite's settings (a fast password hasher, a fallback secret key, per-process test
# databases) weaken a server, so they follow from pytest running, never from the environment: a
# TALLY_TESTING=1 once used for that, left in a server's environment, stored new passwords as MD5.
TESTING = "pytest" in sys.modules

SECRET_KEY = os.environ.get("TALLY_SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production"
    else:
        # A per-install key is better than a shared default; the CLI writes one
        # next to the database on first run (see tally.cli.ensure_secret_key).
        raise ImproperlyConfigured("TALLY_SECRET_KEY must be set (or TALLY_DEBUG=1 for development)")
SECRET_KEY_FALLBACKS = [k.strip() for k in os.environ.get("TALLY_SECRET_KEY_FALLBACKS", "").split(",") if k.strip()]

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("TALLY_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]

INSTALLED_APPS = [
    "tally.security.admin_site.OwnersAdminConfig",  # django.contrib.admin, for owners only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "template_partials",
    "ninja",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "csp",
    "tally.clinic",
    "tally.staff",
    "tally.security",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outermost of the view wrappers: a database that cannot be reached is a 503 page (tally.unavailable).
    "tally.unavailable.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Inside WhiteNoise: every answer but a static file is no-store (patient data).
    "tally.security.middleware.NeverStoreMiddleware",
    # Pages take GET, HEAD and POST only (the API answers other methods itself).
    "tally.staff.middleware.PageMethodsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After messages (it says why it signed someone out), before anything reads request.user.
    "tally.security.middleware.SessionLifetimeMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "tally.security.middleware.TwoFactorGateMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during the view into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tally.urls"
WSGI_APPLICATION = "tally.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str) -> dict[str, Any]:
    config = dj_database_url.parse(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Writers queue instead of failing (IMMEDIATE + busy timeout), in a queue of
        # their own that wakes the next writer at once (tally.db.sqlite3); WAL lets
        # readers run beside the writer; FULL makes a commit survive power loss.
        if os.environ.get("TALLY_SQLITE_QUEUE", "1").strip().lower() not in {"0", "false", "off", "no"}:
            config["ENGINE"] = "tally.db.sqlite3"
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=FULL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA busy_timeout=30000;"
            ),
        }
        if TESTING:
            # A file, not the in-memory default: the concurrency tests need real
            # connections from several threads.
            # One per process, so that parallel test runs never share or drop each other's.
            default_test_name = f"{config['NAME']}-test-{os.getpid()}" if config["NAME"] != ":memory:" else None
            config["TEST"] = {"NAME": os.environ.get("TALLY_TEST_SQLITE_NAME") or default_test_name}
        # A new connection per request: opening a file is cheap, and a connection kept open
        # would go on using a database file that was moved or replaced (a restored backup)
        # through its old file descriptor. (TALLY_CONN_MAX_AGE overrides, for measuring.)
        config["CONN_MAX_AGE"] = int(os.environ.get("TALLY_CONN_MAX_AGE", "0"))
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # Persistent connections (a new one is a server process forked and authenticated),
        # each checked before a request reuses it, so a dropped one is replaced, not a 500.
        config["CONN_MAX_AGE"] = int(os.environ.get("TALLY_CONN_MAX_AGE", "300"))
        config["CONN_HEALTH_CHECKS"] = True
        if TESTING:
            config["TEST"] = {"NAME": f"test_{config['NAME']}_{os.getpid()}"}
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].setdefault("connect_timeout", 5)
    return dict(config)


# Empty counts as unset, as in tally.cli.database_url().
DATABASE_URL = os.environ.get("TALLY_DATABASE_URL") or f"sqlite:///{Path.cwd() / 'tally.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "clinic.Staff"
# django-axes first: it refuses a locked-out user name and address before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Argon2PasswordHasher is argon2id (tests/security checks the stored prefix).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *PASSWORD_HASHERS]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("TALLY_STATIC_ROOT", Path.cwd() / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
# Messages name patients ("Maria Lopez's visit is booked again"): kept in the session, which
# signing out ends, not in Django's default cookie (base64, signed but readable, in every
# request's Cookie header until shown, and left in the browser after signing out).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
CSRF_COOKIE_HTTPONLY = False
# An htmx request with a stale token reloads its page instead of failing silently.
CSRF_FAILURE_VIEW = "tally.staff.views.auth.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# HTTPS-only settings are switched on by TALLY_HTTPS, not by DEBUG being off: `tally serve` and
# `tally demo` on plain http://127.0.0.1 must keep working (a secure cookie would never come back).
HTTPS = env_bool("TALLY_HTTPS")
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
# Sending "preload" enrolls nothing by itself (the domain's owner submits it to the list).
SECURE_HSTS_PRELOAD = HTTPS
# Behind a reverse proxy every request comes from the proxy's address: the client's is the entry
# the proxy adds to X-Forwarded-For (tally.clinic.audit.client_ip, for the sign-in pause and the
# audit log). What a client sends itself is never trusted.
TALLY_BEHIND_PROXY = env_bool("TALLY_BEHIND_PROXY")
if HTTPS and TALLY_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Sessions: an idle timeout and an absolute lifetime (tally.security.middleware), and the
# cookie itself never outlives the absolute lifetime.
TALLY_SESSION_IDLE_MINUTES = int(os.environ.get("TALLY_SESSION_IDLE_MINUTES", "15"))
TALLY_SESSION_MAX_HOURS = int(os.environ.get("TALLY_SESSION_MAX_HOURS", "12"))
SESSION_COOKIE_AGE = TALLY_SESSION_MAX_HOURS * 3600
# API tokens signed in with a password end as a web session does, this long after signing in
# (ApiToken.expires_at, set when issued); the client signs in again.
TALLY_TOKEN_MAX_HOURS = int(os.environ.get("TALLY_TOKEN_MAX_HOURS", "12"))
if TALLY_TOKEN_MAX_HOURS < 1:
    raise ImproperlyConfigured("TALLY_TOKEN_MAX_HOURS must be at least 1")

# Sign-in throttling (django-axes): failures are counted per user name AND address, so a
# stranger guessing cannot lock the real user out from the clinic's own machines; the pause
# ends by itself (never a permanent lock), and failures during it do not extend it.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = int(os.environ.get("TALLY_SIGNIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = dt.timedelta(minutes=int(os.environ.get("TALLY_SIGNIN_COOLOFF_MINUTES", "15")))
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A good sign-in clears the failures, but only once it is whole (tally.security.lockout.
# clear_failures): the password alone, for someone with two-factor, must not clear wrong codes.
AXES_RESET_ON_SUCCESS = False
# The address the server sees, or behind a proxy the one the proxy saw, as the audit log has it;
# a client-sent X-Forwarded-For would let a guesser pick a new one.
AXES_CLIENT_IP_CALLABLE = "tally.clinic.audit.client_ip"
AXES_LOCKOUT_CALLABLE = "tally.security.lockout.lockout_response"
AXES_USERNAME_CALLABLE = "tally.security.lockout.signin_username"
AXES_HTTP_RESPONSE_CODE = 429

# Two-factor sign-in (django-otp, TOTP). Owners must use it unless this is switched off.
TALLY_OWNER_2FA_REQUIRED = env_bool("TALLY_OWNER_2FA_REQUIRED", True)
OTP_TOTP_ISSUER = "Tally"

# Content-Security-Policy (django-csp): nothing inline but a <style> that carries the page's nonce.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],  # Swagger UI's icons are data: URIs
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Idempotency keys are kept at least this long (API.md: at least 24 hours).
TALLY_IDEMPOTENCY_TTL_HOURS = 48
# A clinic audit's pages are read from one stored run for this long (then: run it again).
TALLY_AUDIT_SNAPSHOT_TTL_HOURS = 24
# PostgreSQL lock timeout for an action's row locks; past it the caller gets a 409.
TALLY_LOCK_TIMEOUT_MS = int(os.environ.get("TALLY_LOCK_TIMEOUT_MS", "10000"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    # axes logs every failed sign-in and lockout at WARNING.
    "loggers": {"tally": {"level": "INFO"}, "axes": {"level": "WARNING"}},
}
