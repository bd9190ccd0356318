"""Tally's database backends (see tally.db.sqlite3)."""
