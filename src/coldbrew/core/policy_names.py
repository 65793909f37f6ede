"""The keep-alive policies a function may name in ``keep_alive`` (docs/KEEPALIVE.md).

Names only, so that config validation needs no import of ``scaling``; ``scaling/policies``
builds one policy per name, and a test keeps the two lists equal."""

from __future__ import annotations

KEEP_ALIVE_POLICIES: tuple[str, ...] = (
    "fixed",
    "hybrid",
    "hybrid-p1-p99",
    "hybrid-p5-p95",
    "hybrid-cv5",
    "hybrid-fb10",
)
