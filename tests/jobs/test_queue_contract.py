"""The durable queue's contract, on SQLite and on PostgreSQL: one implementation, same answers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import Engine, update

from coldbrew.jobs.queue import EventQueue, NewEvent, now
from coldbrew.jobs.schedules import Due, ScheduleStore
from coldbrew.registry.asyncq import AsyncEventRow


def _event(request_id: str, key: str | None = None, function: str = "fn") -> NewEvent:
    return NewEvent(request_id, function, 1, b'{"n": 1}', idempotency_key=key)


def test_enqueue_then_lease_then_finish(queue: EventQueue) -> None:
    assert queue.enqueue(_event("r1")) == ("r1", True)
    leased = queue.lease("w1", 10, 30)
    assert [e.request_id for e in leased] == ["r1"]
    assert leased[0].attempts == 1 and leased[0].payload == b'{"n": 1}'
    assert queue.lease("w2", 10, 30) == []  # hidden while leased
    assert queue.finish(leased[0], executed_version=1)
    found = queue.get("r1")
    assert found is not None and found["state"] == "succeeded" and found["attempts"] == 1


def test_idempotency_key_returns_the_first_request_id(queue: EventQueue) -> None:
    assert queue.enqueue(_event("first", key="k")) == ("first", True)
    assert queue.enqueue(_event("second", key="k")) == ("first", False)
    assert queue.enqueue(_event("other-fn", key="k", function="g")) == ("other-fn", True)
    assert queue.get("second") is None
    assert len(queue.lease("w", 10, 30)) == 2


def test_an_expired_lease_is_taken_over_and_the_old_owner_changes_nothing(
    queue: EventQueue, engine: Engine
) -> None:
    queue.enqueue(_event("r1"))
    [first] = queue.lease("dead-gateway", 1, 0.2)
    time.sleep(0.3)
    [again] = queue.lease("w2", 1, 30)
    assert again.request_id == "r1" and again.attempts == 2
    assert not queue.finish(first, 1)  # the lease is w2's now
    assert queue.finish(again, 1)


def test_retry_hides_the_event_for_the_delay_and_counts_function_errors(
    queue: EventQueue,
) -> None:
    queue.enqueue(_event("r1"))
    [event] = queue.lease("w", 1, 30)
    assert queue.retry(event, 0.3, {"code": "FUNCTION_ERROR", "message": "x"}, True)
    assert queue.lease("w", 1, 30) == []
    time.sleep(0.4)
    [event] = queue.lease("w", 1, 30)
    assert event.failures == 1 and event.attempts == 2
    assert queue.retry(event, 0, {"code": "THROTTLED", "message": "x"}, False)
    [event] = queue.lease("w", 1, 30)
    assert event.failures == 1 and event.attempts == 3


def test_dead_letter_redrive_and_purge(queue: EventQueue) -> None:
    for rid in ("a", "b"):
        queue.enqueue(_event(rid))
    for event in queue.lease("w", 2, 30):
        error = {"code": "FUNCTION_ERROR", "message": "boom"}
        assert queue.dead_letter(event, "RetriesExhausted", error)
    letters = queue.dead_letters("fn")
    assert [(d["request_id"], d["reason"]) for d in letters] == [
        ("a", "RetriesExhausted"),
        ("b", "RetriesExhausted"),
    ]
    assert queue.dead_letter_by_id("fn", "a")["payload"] == '{"n": 1}'
    assert queue.redrive("fn", ["a"]) == ["a"]
    [event] = queue.lease("w", 5, 30)
    assert event.request_id == "a" and event.failures == 0
    assert queue.purge("fn") == 1
    assert queue.dead_letters("fn") == []


def test_prune_keeps_queued_events_and_dead_letters(queue: EventQueue, engine: Engine) -> None:
    for rid in ("done", "dead", "waiting"):
        queue.enqueue(_event(rid))
    events = {e.request_id: e for e in queue.lease("w", 2, 30)}
    queue.finish(events["done"], 1)
    queue.dead_letter(events["dead"], "RetriesExhausted", None)
    with engine.begin() as conn:  # make the finished ones old
        conn.execute(
            update(AsyncEventRow)
            .where(AsyncEventRow.state != "queued")
            .values(finished_at=now() - timedelta(days=2))
        )
    assert queue.prune(86_400) == 1
    assert queue.get("done") is None
    assert queue.get("dead") is not None and queue.get("waiting") is not None


def test_concurrent_leasers_never_share_an_event(queue: EventQueue, engine: Engine) -> None:
    """Four workers (threads with their own connections) lease 200 events: each exactly once
    (SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    for i in range(200):
        queue.enqueue(_event(f"r{i}"))
    taken: list[str] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        mine = EventQueue(engine)
        while True:
            batch = mine.lease(owner, 7, 60)
            if not batch:
                return
            with lock:
                taken.extend(e.request_id for e in batch)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(f"r{i}" for i in range(200))


def test_depth_reports_count_and_oldest_age(queue: EventQueue) -> None:
    queue.enqueue(_event("r1"))
    queue.enqueue(_event("r2", function="g"))
    depth = queue.depth()
    assert depth["fn"][0] == 1 and depth["g"][0] == 1
    assert 0 <= depth["fn"][1] < 60


def test_a_schedule_tick_fires_once_across_stores(queue: EventQueue, engine: Engine) -> None:
    """Two gateways (two stores) see the same due tick; one commit wins, the other is told."""
    one, two = ScheduleStore(engine, queue), ScheduleStore(engine, EventQueue(engine))
    one.add("fn", "every", "rate(1 seconds)")
    time.sleep(1.1)
    [due] = one.due()
    assert two.due() == [due]
    assert one.fire(due, _event("tick-1", key="schedule:every:1"))
    assert not two.fire(due, _event("tick-1b", key="schedule:every:1b"))
    assert one.due() == []  # this tick is done
    assert [e.request_id for e in queue.lease("w", 10, 30)] == ["tick-1"]
    listed = one.list("fn")
    assert listed[0]["last_request_id"] == "tick-1" and listed[0]["next_tick"] is not None
    stale = Due(due.id, due.function, due.name, due.tick - timedelta(seconds=1), None)
    assert not one.fire(stale, _event("old", key="schedule:every:old"))
