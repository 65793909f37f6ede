"""The rollout controller: a loop in the gateway that moves each active rollout's alias step by
step, judging the candidate against the baseline with ``rollout.decide``.

State is in the registry (``registry/rollouts.py``), so a rollout survives a gateway restart
and the loop only needs the rows it reads each tick. Statistics come from the gateway's sliding
window of recent invocations (``observe/window.py``), per version: with several gateways each
judges what it served, and the first to decide moves the row (updates are guarded by state).
Accuracy, when a rollout judges it, comes from the feedback table (shared by every gateway):
feedback on each version's predictions made in the period, however late it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from coldbrew import errors
from coldbrew.delivery.rollout import Criteria, Decision, VersionStats, decide
from coldbrew.observe.alerting import AlertManager
from coldbrew.observe.window import Window, percentile
from coldbrew.registry import Registry
from coldbrew.registry.models import utcnow
from coldbrew.registry.rollouts import Rollout, RolloutStore
from coldbrew.scaling.scheduler import Scheduler
from coldbrew.security.audit import AuditLog
from coldbrew.security.audit import event as audit_event

log = logging.getLogger("coldbrew.rollout")
ACTOR = "coldbrew:rollout-controller"


def version_stats(usages: list[Any]) -> VersionStats:
    """Errors are failed invocations other than throttles (capacity, not the version's code);
    p95 is over warm invocations (a cold start measures the fork, not the version). A shadow's
    copies are not the version's traffic (bursts of many rows, at idle priority): left out."""
    judged = [u for u in usages if u.status != "THROTTLED" and u.protocol != "shadow"]
    latencies = sorted(u.wall_ms for u in judged if u.ok and not u.cold_start)
    return VersionStats(
        invocations=len(judged),
        errors=sum(1 for u in judged if not u.ok),
        p95_ms=percentile(latencies, 95),
    )


class RolloutController:
    def __init__(
        self,
        store: RolloutStore,
        registry: Registry,
        scheduler: Scheduler,
        window: Window,
        audit: AuditLog | None = None,
        alerts: AlertManager | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.scheduler = scheduler
        self.window = window
        self.audit = audit
        self.alerts = alerts
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception("rollout controller pass failed")

    # --- what users ask for ---------------------------------------------------------------------
    async def begin(
        self,
        function: str,
        candidate: int,
        steps: list[float],
        step_duration_s: float,
        criteria: Criteria,
        alias: str = "latest",
        baseline: int | None = None,
        actor: str = "",
    ) -> Rollout:
        current = await asyncio.to_thread(self.registry.get_alias, function, alias)
        await asyncio.to_thread(self.registry.get_version, function, candidate)  # NotFound
        if baseline is None:
            baseline = current.version
            if baseline == candidate:  # e.g. `latest` right after the candidate's deploy
                older = [
                    v.number
                    for v in await asyncio.to_thread(self.registry.list_versions, function)
                    if v.number < candidate
                ]
                if not older:
                    raise errors.ValidationError(
                        f"alias '{alias}' already points at version {candidate} and no older "
                        "version exists to compare it with"
                    )
                baseline = older[-1]
        await asyncio.to_thread(self.registry.get_version, function, baseline)
        if baseline == candidate:
            raise errors.ValidationError("the baseline and the candidate are the same version")
        rollout = await asyncio.to_thread(
            self.store.create,
            function_name=function,
            alias=alias,
            baseline=baseline,
            candidate=candidate,
            steps=steps,
            step_duration_s=step_duration_s,
            criteria=criteria.to_dict(),
        )
        await self._apply(rollout, rollout.fraction, current.sticky)
        self._audit("rollout.begin", rollout, actor, {"fraction": rollout.fraction})
        return rollout

    async def status(self, function: str) -> dict[str, Any]:
        rollout = await asyncio.to_thread(self.store.current, function)
        if rollout is None:
            raise errors.NotFound(f"function '{function}' has no rollout", function=function)
        out = rollout.to_dict()
        if rollout.active:
            base, cand = await self._stats(rollout)
            out["baseline_stats"], out["candidate_stats"] = base.to_dict(), cand.to_dict()
            out["verdict"] = self._decide(rollout, base, cand, time.time()).__dict__
        return out

    async def pause(self, function: str, actor: str = "") -> Rollout:
        rollout = await self._active(function)
        done = await asyncio.to_thread(
            self.store.update, rollout.id, "running", state="paused", note=_note("pause")
        )
        self._audit("rollout.pause", done, actor)
        return done

    async def resume(self, function: str, actor: str = "") -> Rollout:
        """Carries on with the step it was on, timed afresh (what a pause saw is not judged)."""
        rollout = await self._active(function)
        done = await asyncio.to_thread(
            self.store.update,
            rollout.id,
            "paused",
            state="running",
            step_started_at=utcnow(),
            note=_note("resume"),
        )
        self._audit("rollout.resume", done, actor)
        return done

    async def abort(self, function: str, actor: str = "") -> Rollout:
        rollout = await self._active(function)
        return await self._roll_back(rollout, "aborted", "aborted by the user", actor)

    async def _active(self, function: str) -> Rollout:
        rollout = await asyncio.to_thread(self.store.current, function)
        if rollout is None or not rollout.active:
            raise errors.NotFound(f"function '{function}' has no rollout in progress")
        return rollout

    # --- the loop -------------------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> list[tuple[Rollout, Decision]]:
        """One pass over every running rollout; returns what it decided."""
        now = time.time() if now is None else now
        taken = []
        for rollout in await asyncio.to_thread(self.store.active):
            if rollout.state != "running":
                continue
            try:
                decision = await self._step(rollout, now)
            except errors.Conflict:
                continue  # moved meanwhile (a user, another gateway): next pass sees it
            except errors.NotFound as exc:  # function, alias or version deleted
                await self._finish(rollout, "aborted", f"gone: {exc.message}")
                continue
            if decision is not None:
                taken.append((rollout, decision))
        return taken

    async def _step(self, rollout: Rollout, now: float) -> Decision | None:
        alias = await asyncio.to_thread(
            self.registry.get_alias, rollout.function_name, rollout.alias
        )
        expected = rollout.candidate if rollout.fraction >= 1 else rollout.baseline
        if alias.version != expected:
            await self._finish(
                rollout,
                "aborted",
                f"alias '{rollout.alias}' was moved to version {alias.version} outside the rollout",
            )
            return None
        base, cand = await self._stats(rollout)
        decision = self._decide(rollout, base, cand, now)
        if decision.action == "hold":
            return decision
        note = _note(decision.action, decision.reason, rollout.step, base, cand)
        if decision.action == "rollback":
            await self._roll_back(rollout, "rolled_back", decision.reason, ACTOR, note)
        elif decision.action == "complete":
            await self._finish(rollout, "succeeded", decision.reason, note)
        else:
            step = rollout.step + 1
            moved = await asyncio.to_thread(
                self.store.update,
                rollout.id,
                "running",
                step=step,
                step_started_at=utcnow(),
                note=note,
            )
            await self._apply(moved, moved.fraction, alias.sticky)
            self._audit("rollout.advance", moved, ACTOR, {"fraction": moved.fraction})
        return decision

    async def _stats(self, rollout: Rollout) -> tuple[VersionStats, VersionStats]:
        step_start = rollout.step_started_at
        # The baseline over the whole rollout (and one step before it): at the last steps it
        # serves little or nothing, and a longer record is a steadier yardstick.
        base_start = rollout.created_at - timedelta(seconds=rollout.step_duration_s)
        name = rollout.function_name
        base = version_stats(self.window.since(base_start.timestamp(), name, rollout.baseline))
        cand = version_stats(self.window.since(step_start.timestamp(), name, rollout.candidate))
        if Criteria(**rollout.criteria).judges_accuracy:  # one indexed count per version
            feedback = self.store.feedback
            b = await asyncio.to_thread(feedback, name, rollout.baseline, base_start)
            c = await asyncio.to_thread(feedback, name, rollout.candidate, step_start)
            base = replace(base, feedback=b[0], correct=b[1])
            cand = replace(cand, feedback=c[0], correct=c[1])
        return base, cand

    @staticmethod
    def _decide(rollout: Rollout, base: VersionStats, cand: VersionStats, now: float) -> Decision:
        elapsed = now - rollout.step_started_at.timestamp()
        last = rollout.step >= len(rollout.steps) - 1
        criteria = Criteria(**rollout.criteria)
        return decide(base, cand, criteria, elapsed, rollout.step_duration_s, last)

    # --- effects --------------------------------------------------------------------------------
    async def _apply(self, rollout: Rollout, fraction: float, sticky: str | None) -> None:
        """Point the alias at this step's split (all on the candidate at 100 %)."""
        name = rollout.function_name
        if fraction >= 1:
            version, weights = rollout.candidate, None
        else:
            version, weights = rollout.baseline, {rollout.candidate: fraction}
        await asyncio.to_thread(
            self.registry.set_alias, name, rollout.alias, version, weights, sticky
        )
        self.scheduler.forget(name)
        await self.scheduler.warm(name)

    async def _roll_back(
        self, rollout: Rollout, state: str, reason: str, actor: str, note: Any = None
    ) -> Rollout:
        name = rollout.function_name
        done = await asyncio.to_thread(
            self.store.update,
            rollout.id,
            None,
            state=state,
            reason=reason,
            note=note or _note(state, reason, rollout.step),
        )
        try:
            alias = await asyncio.to_thread(self.registry.get_alias, name, rollout.alias)
            await asyncio.to_thread(
                self.registry.set_alias, name, rollout.alias, rollout.baseline, None, alias.sticky
            )
        except errors.NotFound:
            pass  # the alias or function is gone: nothing to point back
        self.scheduler.forget(name)
        await self.scheduler.warm(name)
        action = "rollout.rollback" if state == "rolled_back" else "rollout.abort"
        self._audit(action, done, actor, {"reason": reason})
        if state == "rolled_back" and self.alerts is not None:
            self.alerts.announce(
                "rollout_rollback",
                name,
                f"{name}: rollout of version {rollout.candidate} on alias '{rollout.alias}' "
                f"rolled back to version {rollout.baseline}: {reason}",
                value=None,
                threshold=None,
                version=rollout.candidate,
                baseline=rollout.baseline,
            )
        log.warning("%s %s: %s", action, name, reason)
        return done

    async def _finish(self, rollout: Rollout, state: str, reason: str, note: Any = None) -> None:
        try:
            done = await asyncio.to_thread(
                self.store.update,
                rollout.id,
                "running",
                state=state,
                reason=reason,
                note=note or _note(state, reason, rollout.step),
            )
        except errors.Conflict:
            return
        self._audit(
            f"rollout.{'complete' if state == 'succeeded' else 'abort'}",
            done,
            ACTOR,
            {"reason": reason},
        )

    def _audit(self, action: str, rollout: Rollout, actor: str, extra: Any = None) -> None:
        """The controller's own decisions; what a user asks for over REST is audited by the
        gateway's middleware already (``rollout.start``, ``rollout.abort``...)."""
        if self.audit is None or (actor and actor != ACTOR):
            return
        details = {
            "rollout": rollout.id,
            "alias": rollout.alias,
            "baseline": rollout.baseline,
            "candidate": rollout.candidate,
            "step": rollout.step,
            **(extra or {}),
        }
        self.audit.record(audit_event(actor or ACTOR, action, rollout.function_name, details))


def _note(
    action: str,
    reason: str = "",
    step: int | None = None,
    base: VersionStats | None = None,
    cand: VersionStats | None = None,
) -> dict[str, Any]:
    note: dict[str, Any] = {"at": utcnow().isoformat(), "action": action, "reason": reason}
    if step is not None:
        note["step"] = step
    if base is not None and cand is not None:
        note["baseline"], note["candidate"] = base.to_dict(), cand.to_dict()
    return note
