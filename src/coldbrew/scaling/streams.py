"""Stream sessions on the scheduler's side: one instance slot leased for a session's life.

The gateway's stream adapter pumps WebSocket frames through a :class:`StreamLease`; it never
touches pools or instances itself. Closing the lease frees the slot and reports the session to
the observers as one invocation (metered for its whole duration, as a Lambda response stream
is billed). The session's feature lookups are counted as they arrive, per frame
(``count_features``), not with that one outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.runtime import messages as m
from coldbrew.scaling.instance import Instance, StreamOutput
from coldbrew.scaling.pool import Pool


class StreamLease:
    def __init__(
        self,
        pool: Pool,
        instance: Instance,
        cold: bool,
        stream_id: int,
        outputs: asyncio.Queue[StreamOutput],
        outcome: Outcome,
        report: Callable[[Outcome], None],
        report_features: Callable[[str, list[m.FeatureStat]], None] | None = None,
    ) -> None:
        self.pool = pool
        self.instance = instance
        self.cold = cold
        self.stream_id = stream_id
        self.outputs = outputs
        self._outcome = outcome
        self._report = report
        self._report_features = report_features
        self._started = time.perf_counter()
        self._closed = False
        self.error_code: str | None = None
        """Set by the adapter when the session ended in error, for the meter."""

    def send(self, data: bytes, text: bool) -> None:
        self.instance.stream_send(self.stream_id, data, text)

    def end_input(self) -> None:
        """No more frames: the handler's frame iterator ends."""
        self.instance.stream_close(self.stream_id)

    def count_features(self, stats: list[m.FeatureStat]) -> None:
        """Lookups the handler made for a frame (``StreamFeatures``), for ``/metrics``."""
        if self._report_features is not None:
            self._report_features(self._outcome.function_name, stats)

    def kill(self, reason: errors.ColdbrewError) -> None:
        self.instance.kill(reason)

    def close(self) -> None:
        """Free the slot and meter the session; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.pool.release(self.instance)
        self.pool.callers -= 1
        duration_ms = (time.perf_counter() - self._started) * 1000
        outcome = self._outcome
        outcome.duration_ms = outcome.wall_ms = duration_ms
        outcome.init_ms = self.instance.init_ms if self.cold else None
        if self.error_code is not None:
            outcome.platform_error = self.error_code
        self._report(outcome)


def stream_fields(request_id: str, arn: str, max_s: float) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "deadline_ms": int(time.time() * 1000 + max_s * 1000),
        "invoked_function_arn": arn,
    }
