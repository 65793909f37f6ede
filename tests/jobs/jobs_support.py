"""Helpers of the async-invocation tests (a module of its own, so tests can import it: every
test folder has a ``conftest`` and their names clash)."""

from __future__ import annotations


def start_together(*servers: object) -> None:
    """Start gateways in parallel threads (each start is mostly waiting for its template)."""
    import threading

    errors: list[BaseException] = []

    def start(server: object) -> None:
        try:
            server.start()  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
