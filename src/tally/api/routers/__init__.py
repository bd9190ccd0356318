"""One router per area of the clinic."""
# No `from __future__ import annotations` in routers: ninja reads the views' annotations at runtime.
