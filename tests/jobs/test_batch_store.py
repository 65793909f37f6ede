"""The batch job store's contract on SQLite and PostgreSQL: claims and leases, per-chunk
commits that count once and only for the lease holder, cancel, release, prune."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from coldbrew.jobs.batch_store import JobStore, NewJob

JOB = NewJob(
    id="job-1",
    function_name="alpha",
    qualifier=None,
    home="host:/home",
    folder="/home/jobs/job-1",
    input_path="/home/jobs/job-1/input.csv",
    input_format="csv",
    output_path="/home/jobs/job-1/results.csv",
    errors_path="/home/jobs/job-1/results.errors.csv",
    output_format="csv",
    event_shape="record",
    total_rows=100,
    chunk_size=32,
    parallelism=2,
    caller_kind=None,
    caller_id=None,
)


def test_claims_commits_takeover_cancel_release(engine: Engine) -> None:
    store = JobStore(engine)
    store.create(JOB)
    store.create(replace(JOB, id="elsewhere", home="other:/home"))
    first = store.claim("gw-a", "host:/home", lease_s=-1)  # a lease already expired
    assert first is not None and first.id == "job-1"
    assert store.commit_chunk(first, 0, 32, 2)
    assert store.commit_chunk(first, 0, 32, 2)  # recorded once, counted once
    assert store.done_chunks("job-1") == {0}
    # gw-a "died": its lease ran out, gw-b takes the job over; gw-a can record nothing more.
    second = store.claim("gw-b", "host:/home", lease_s=60)
    assert second is not None and second.owner == "gw-b"
    assert store.claim("gw-c", "host:/home", lease_s=60) is None  # held; the other home's job
    assert not store.commit_chunk(first, 1, 32, 0)
    assert not store.extend(first, 60)
    assert store.commit_chunk(second, 1, 32, 0)
    job = store.get("job-1")
    assert job is not None
    assert (job["rows_succeeded"], job["rows_failed"], job["chunks_done"]) == (62, 2, 2)
    assert (job["runs"], job["runner"], job["chunks_total"]) == (2, "gw-b", 4)
    assert store.done_chunks("job-1") == {0, 1}
    # Cancel: the holder's lease and commits stop counting; a finished job stays finished.
    assert store.cancel("job-1")["state"] == "cancelled"  # type: ignore[index]
    assert not store.extend(second, 60) and not store.commit_chunk(second, 2, 32, 0)
    assert not store.finish(second, "completed")
    assert store.get("job-1")["rows_done"] == 64  # type: ignore[index]
    assert store.claim("gw-b", "host:/home", lease_s=60) is None
    assert store.prune("host:/home", older_than_s=-1) == ["/home/jobs/job-1"]
    assert store.get("job-1") is None and store.done_chunks("job-1") == set()
    assert [j["id"] for j in store.list()] == ["elsewhere"]

    # A clean stop hands a job back at once; a finished job stays finished.
    store.create(replace(JOB, id="job-2"))
    held = store.claim("gw-a", "host:/home", lease_s=60)
    assert held is not None and held.id == "job-2"
    store.release(held)
    again = store.claim("gw-b", "host:/home", lease_s=60)
    assert again is not None and again.id == "job-2"
    assert store.finish(again, "completed")
    assert store.cancel("job-2")["state"] == "completed"  # type: ignore[index]
