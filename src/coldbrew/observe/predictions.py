"""The prediction log's writer: a sampled share of invocations, written in batches.

The data plane offers every completed invocation (:meth:`PredictionLog.offer`, on the event
loop): a hash of the request id decides whether it is kept (so a retried request id is decided
the same way by every gateway), and a kept one is only appended to a list. A background task
takes the list every ``interval_s`` and, on a worker thread, redacts, hashes, encodes and
inserts it in one transaction. When the database is down the batch is kept (at most
``max_pending``, then the oldest are dropped and counted), so invocations never wait for the log.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from coldbrew.observe.batch_writer import BatchWriter
from coldbrew.registry.predictions import PredictionStore

log = logging.getLogger("coldbrew.predictions")

REDACTED = "[redacted]"
MAX_TEXT = 256 * 1024
"""Longer inputs and outputs are stored as their hash only (``input`` / ``output`` None)."""
_SCALE = float(2**64)


def sampled(request_id: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"cb-plog").digest()
    return int.from_bytes(digest, "big") / _SCALE < rate


def _tokens(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    for part in path.lstrip("$").replace("]", "").replace("[", ".").split("."):
        if part:
            tokens.append(int(part) if part.isdigit() else part.strip("'\""))
    return tokens


def redact(document: Any, paths: list[str]) -> Any:
    """A copy of ``document`` with the value at each path replaced (absent paths ignored)."""
    if not paths:
        return document
    document = orjson.loads(orjson.dumps(document))  # a deep copy of plain JSON
    for path in paths:
        tokens = _tokens(path)
        if not tokens:
            continue
        parent = document
        for token in tokens[:-1]:
            parent = _child(parent, token)
            if parent is None:
                break
        last = tokens[-1]
        in_dict = isinstance(parent, dict) and isinstance(last, str) and last in parent
        in_list = isinstance(parent, list) and isinstance(last, int) and last < len(parent)
        if in_dict or in_list:
            parent[last] = REDACTED  # type: ignore[index]
    return document


def _child(value: Any, token: str | int) -> Any:
    if isinstance(value, dict) and isinstance(token, str):
        return value.get(token)
    if isinstance(value, list) and isinstance(token, int) and token < len(value):
        return value[token]
    return None


def _text(raw: bytes, paths: list[str]) -> str | None:
    """JSON text of ``raw`` with ``paths`` redacted; None when too long to keep."""
    if len(raw) > MAX_TEXT:
        return None
    if not paths:
        return raw.decode("utf-8", errors="replace")
    try:
        return orjson.dumps(redact(orjson.loads(raw), paths)).decode()
    except orjson.JSONDecodeError:
        return None  # not JSON: its fields cannot be found, so keep nothing rather than leak


class PredictionLog(BatchWriter):
    what = "prediction log rows"

    def __init__(
        self, store: PredictionStore, interval_s: float = 1.0, max_pending: int = 100_000
    ) -> None:
        super().__init__(interval_s, max_pending)
        self.store = store
        self.written = 0

    def offer(self, request: Any, version: Any, outcome: Any) -> None:
        """Keep this invocation if its function samples it. Cheap: no encoding here."""
        config = version.config
        rate = config.log_predictions
        if rate <= 0 or not sampled(outcome.request_id, rate):
            return
        error = outcome.error
        self._append(
            (
                outcome.request_id,
                outcome.function_name,
                outcome.version,
                outcome.caller,
                datetime.now(UTC),
                outcome.wall_ms or outcome.duration_ms,
                "OK" if error is None else error.code,
                request.payload,
                outcome.body if error is None else None,
                config.log_inputs,
                config.log_redact,
            )
        )

    @staticmethod
    def row(item: tuple[Any, ...]) -> dict[str, Any]:
        request_id, function, version, caller, at, latency, status, payload, body, inputs, paths = (
            item
        )
        return {
            "request_id": request_id,
            "function_name": function,
            "version": version,
            "caller": caller,
            "at": at,
            "latency_ms": round(float(latency), 3),
            "status": status,
            "input": _text(payload, paths) if inputs == "full" else None,
            "input_sha256": hashlib.sha256(payload).hexdigest(),
            "output": _text(body, paths) if body is not None else None,
        }

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        self.store.insert([self.row(item) for item in batch])
        self.written += len(batch)
