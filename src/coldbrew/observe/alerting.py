"""The alert loop: evaluates the rules over the sliding window every few seconds, and sends
what fires or resolves to the log and to webhooks.

Webhooks are POSTed from their own tasks with a timeout, so a slow receiver delays nothing, and
at most ``MAX_PENDING_WEBHOOKS`` deliveries are in flight (beyond that they are dropped and
logged: an alert storm must not grow memory without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import httpx

from coldbrew.observe.rules import Evaluation, RuleConfig, evaluate, transitions
from coldbrew.observe.window import Window

log = logging.getLogger("coldbrew.alerts")
MAX_PENDING_WEBHOOKS = 100
WEBHOOK_TIMEOUT_S = 5.0
HISTORY = 200


class AlertManager:
    def __init__(
        self,
        window: Window,
        config: RuleConfig,
        webhooks: list[str],
        interval_s: float = 5.0,
        baseline_s: float = 3600.0,
        per_version: bool = True,
    ) -> None:
        self.window = window
        self.per_version = per_version
        """Also evaluate each version of a function that ran more than one version in the
        window (a split, a rollout): alerts labelled ``name:version``."""
        self.config = config
        self.webhooks = webhooks
        self.interval_s = interval_s
        self.baseline_s = baseline_s
        self.active: dict[tuple[str, str], dict[str, Any]] = {}
        self.sources: list[Callable[[float], list[Evaluation]]] = []
        """More rules, evaluated each pass (feedback quality: ``observe/quality.py``)."""
        self.history: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=WEBHOOK_TIMEOUT_S)
        if self._client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.evaluate_once()
            except Exception:
                log.exception("alert evaluation failed")

    def evaluate_once(self, now: float | None = None) -> list[dict[str, Any]]:
        """One pass: returns the events (fired and resolved) it produced."""
        now = time.time() if now is None else now
        self.window.trim(now)
        start = now - self.config.window_s
        span = self._baseline_span(now)
        tally = self.window.tally(start, None if span is None else start - span)
        functions = tally.functions() | {f for _, f in self.active if ":" not in f}
        evaluations: list[Evaluation] = []
        for function in sorted(functions):
            baseline = None
            if span is not None:  # the average spend per window-length before the window
                baseline = tally.earlier_cost.get(function, 0.0) / span * self.config.window_s
            evaluations += evaluate(function, tally.stats(function), self.config, baseline)
            versions = tally.versions(function)
            if self.per_version and len(versions) > 1:
                for version in versions:
                    stats = tally.stats(function, version)
                    evaluations += evaluate(f"{function}:{version}", stats, self.config)[:3]
        for source in self.sources:
            evaluations += source(now)
        evaluations += self._gone_versions(evaluations)
        fired, resolved = transitions(set(self.active), evaluations)
        events = [self._event("firing", e, now) for e in fired]
        events += [self._event("resolved", e, now) for e in resolved]
        for event in events:
            self._publish(event)
        return events

    def _gone_versions(self, evaluations: list[Evaluation]) -> list[Evaluation]:
        """A per-version alert whose function no longer splits its traffic resolves."""
        seen = {e.key for e in evaluations}
        return [
            Evaluation(rule, label, False, None, 0.0, f"{label}: no longer receives traffic")
            for rule, label in self.active
            if ":" in label and (rule, label) not in seen
        ]

    def _baseline_span(self, now: float) -> float | None:
        """How far before the window the cost baseline reaches (at most ``baseline_s``); None
        until the window holds half that much history."""
        window_start = now - self.config.window_s
        oldest = self.window.oldest()
        earliest = now if oldest is None else oldest
        if earliest > window_start - self.baseline_s / 2:
            return None
        return min(self.baseline_s, window_start - earliest)

    def announce(self, rule: str, function: str, message: str, **details: Any) -> dict[str, Any]:
        """A one-off event that no rule evaluates (a rollout rolled back): sent to the log and
        the webhooks like a firing alert, kept in the recent history, never "active"."""
        event = {"state": "firing", "at": time.time(), "rule": rule, "function": function}
        event.update(firing=True, message=message, **details)
        self._publish(event)
        return event

    def _event(self, state: str, e: Evaluation, now: float) -> dict[str, Any]:
        event = {"state": state, "at": now, **asdict(e)}
        if state == "firing":
            self.active[e.key] = {**event, "since": now}
        else:
            started = self.active.pop(e.key, {})
            event["since"] = started.get("since")
        return event

    def _publish(self, event: dict[str, Any]) -> None:
        self.history = [*self.history[-(HISTORY - 1) :], event]
        level = logging.WARNING if event["state"] == "firing" else logging.INFO
        log.log(level, "alert %s %s: %s", event["state"], event["rule"], event["message"])
        for url in self.webhooks:
            if len(self._deliveries) >= MAX_PENDING_WEBHOOKS:
                log.warning("alert webhook backlog full; dropped delivery to %s", url)
                continue
            task = asyncio.get_running_loop().create_task(self._post(url, event))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _post(self, url: str, event: dict[str, Any]) -> None:
        assert self._client is not None
        try:
            response = await self._client.post(url, json={"source": "coldbrew", **event})
            if response.status_code >= 400:
                log.warning("alert webhook %s answered %s", url, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("alert webhook %s failed: %s", url, exc)

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": list(self.active.values()),
            "recent": list(reversed(self.history[-50:])),
            "rules": asdict(self.config),
        }
