"""Delivering destination records: to another function's queue, a webhook, or the results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from coldbrew.core.destinations import parse_destination
from coldbrew.jobs.queue import EventQueue

log = logging.getLogger("coldbrew.async")
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_TRIES = 3

SubmitFn = Callable[[str, bytes, str], Awaitable[None]]
"""``submit(function, payload, idempotency_key)``: queue an async invocation."""


class Deliverer:
    def __init__(self, queue: EventQueue, submit: SubmitFn) -> None:
        self.queue = queue
        self.submit = submit
        self._http: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def deliver(self, destination: str, function: str, record: dict[str, Any]) -> bool:
        """Send one record; False (logged) when it could not be delivered."""
        request_id = record["requestContext"]["requestId"]
        condition = record["requestContext"]["condition"]
        try:
            target = parse_destination(destination)
            if target.kind == "results":
                await asyncio.to_thread(
                    self.queue.add_result, function, request_id, condition, record
                )
            elif target.kind == "function":
                # One record per source event and condition, however often the source reran.
                key = f"destination:{function}:{request_id}:{condition}"
                await self.submit(target.target, orjson.dumps(record), key)
            else:
                await self._post(target.target, record)
        except Exception as exc:
            log.warning(
                "async %s: %s destination %s failed: %s",
                request_id,
                condition,
                destination,
                getattr(exc, "message", None) or repr(exc),
                extra={"request_id": request_id, "function": function},
            )
            return False
        return True

    async def _post(self, url: str, record: dict[str, Any]) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        body = orjson.dumps(record)
        headers = {"content-type": "application/json"}
        for attempt in range(WEBHOOK_TRIES):
            try:
                response = await self._http.post(url, content=body, headers=headers)
                if response.status_code < 500:
                    response.raise_for_status()  # a 4xx is final: the receiver refused it
                    return
            except httpx.TransportError:
                if attempt == WEBHOOK_TRIES - 1:
                    raise
            await asyncio.sleep(0.5 * 2**attempt)
        raise RuntimeError(f"webhook {url} kept answering 5xx")
