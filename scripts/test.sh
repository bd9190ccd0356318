#!/usr/bin/env bash
# Install what the tests need and run the whole suite: on SQLite, then on PostgreSQL.
# Under CI=true PostgreSQL and Chromium are required (installed/started here); outside CI,
# tests that need a missing one skip with a one-line reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CI=${CI:-}
in_ci() { [[ "${CI,,}" == "true" || "$CI" == "1" ]]; }

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test]'

if in_ci; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || { echo "could not install chromium"; exit 1; }
  fi
  if ! "$VENV/bin/python" -c "import weasyprint" >/dev/null 2>&1; then
    echo "installing Debian's pango for WeasyPrint (invoice PDFs)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 >/dev/null) \
      || { echo "could not install pango"; exit 1; }
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

PG_URL=${TALLY_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
SQLITE_URL="sqlite:///$(pwd)/.test-db.sqlite3"

run_pg=
if in_ci || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  run_pg=1
fi

# Collect the static files every test server shares once, before the runs start (both
# runs' servers would otherwise race to collect them into the one directory).
TALLY_DATABASE_URL="sqlite:///:memory:" TALLY_STATIC_ROOT="${TMPDIR:-/tmp}/tally-test-static-$(id -u)" \
  TALLY_SECRET_KEY=collect-only "$VENV/bin/python" -m django shell --settings=tally.settings \
  -c "from tally.server import collect_static; collect_static()" >/dev/null

# The two databases' runs are independent (each test process makes its own databases and
# servers on free ports): on the 2-core CI machine they run side by side, each printing
# its report when done. TALLY_TEST_SERIAL=1 runs them one after the other.
status=0
if [[ -n "$run_pg" && -z "${TALLY_TEST_SERIAL:-}" ]]; then
  logs=$(mktemp -d)
  TALLY_DATABASE_URL="$SQLITE_URL" "$VENV/bin/python" -m pytest "$@" >"$logs/sqlite.log" 2>&1 &
  sqlite_pid=$!
  TALLY_DATABASE_URL="$PG_URL" "$VENV/bin/python" -m pytest "$@" >"$logs/pg.log" 2>&1 &
  pg_pid=$!
  sqlite_status=0; pg_status=0
  wait $sqlite_pid || sqlite_status=$?
  wait $pg_pid || pg_status=$?
  echo "== SQLite =="; cat "$logs/sqlite.log"
  echo "== PostgreSQL =="; cat "$logs/pg.log"
  rm -rf "$logs"
  [[ $sqlite_status -eq 0 && $pg_status -eq 0 ]] || status=1
else
  echo "== SQLite =="
  TALLY_DATABASE_URL="$SQLITE_URL" "$VENV/bin/python" -m pytest "$@" || status=$?
  if [[ -n "$run_pg" ]]; then
    echo "== PostgreSQL =="
    TALLY_DATABASE_URL="$PG_URL" "$VENV/bin/python" -m pytest "$@" || status=$?
  else
    echo "SKIPPED PostgreSQL run: no server answers at 127.0.0.1:5432"
  fi
fi
exit $status
