"""The HTTP API (django-ninja) at /api/v1/: parse, look up, call one action, render."""
