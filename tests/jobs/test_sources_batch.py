"""A watched folder with ``batch_job = true`` on a real gateway (docs/ASYNC.md "Object
sources as batch jobs"): a dropped CSV becomes one batch job whose results land beside it with
every row; the same file copied in again (same name, same content) creates no second job; a
file that is not parseable is a failed job naming its line, and the source goes on."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import Server, wait_for, write_bundle

SERVER_ENV = {
    "COLDBREW_EVENT_SOURCE_SYNC_S": "0.3",
    "COLDBREW_ASYNC_POLL_S": "0.1",
    "COLDBREW_PRELOAD_MODULES": "[]",  # a plain handler: a fast start
}
HANDLER = """
def handler(event, context):
    return {"n": event["n"], "twice": event["n"] * 2}
"""
ROWS = 7


def _jobs(server: Server) -> list[dict[str, Any]]:
    return server.client.get("/v1/functions/inboxfn/jobs").json()["jobs"]


def _finished(server: Server, count: int) -> list[dict[str, Any]]:
    jobs = _jobs(server)
    done = [j for j in jobs if j["state"] in ("completed", "failed", "cancelled")]
    return jobs if len(jobs) >= count and len(done) == len(jobs) else []


def test_a_dropped_csv_is_one_batch_job_with_results_beside_it(
    server: Server, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = f"""handler = "handler:handler"
concurrency = 8
max_instances = 1  # one cold start serves every row
queue_timeout_s = 60  # rows wait out the cold start instead of being retried with a backoff

[[event_source]]
kind = "folder"
path = "{inbox}"
batch_job = true
settle_s = 0
poll_s = 0.3
"""
    bundle = write_bundle(tmp_path / "fn", HANDLER, config)
    assert server.deploy_folder("inboxfn", bundle).status_code == 201
    content = "n\n" + "".join(f"{i}\n" for i in range(ROWS))
    drop = tmp_path / "staging.csv"
    drop.write_text(content)
    drop.rename(inbox / "data.csv")  # as an uploader would: the file appears whole
    jobs = wait_for(lambda: _finished(server, 1), 30, "the job of data.csv")
    assert [j["state"] for j in jobs] == ["completed"]
    job = jobs[0]
    assert job["total_rows"] == ROWS and job["rows_succeeded"] == ROWS
    with open(inbox / "data.results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert [int(r["row"]) for r in results] == list(range(ROWS))
    assert [r["output"] for r in results] == [f'{{"n":{i},"twice":{2 * i}}}' for i in range(ROWS)]
    assert (inbox / "data.errors.csv").exists()

    # The same file again (a new mtime, same name and content): its job exists, none is added;
    # the results written beside it are not taken for input either.
    (inbox / "data.csv").unlink()
    drop.write_text(content)
    drop.rename(inbox / "data.csv")
    # A bad file: a failed job naming its line, and the source goes on polling.
    (inbox / "bad.csv").write_text("n\n1\n2,3\n")
    wait_for(lambda: _finished(server, 2), 30, "the job of bad.csv")
    time.sleep(0.9)  # three more polls: nothing else comes
    jobs = _jobs(server)
    assert sorted(j["state"] for j in jobs) == ["completed", "failed"], jobs
    failed = next(j for j in jobs if j["state"] == "failed")
    assert failed["error"]["code"] == "VALIDATION_ERROR"
    assert "bad.csv" in failed["error"]["message"] and "line 3" in failed["error"]["message"]
    status = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", "batch", "status", failed["id"]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**server.env, "COLDBREW_URL": server.url},
    )
    assert status.returncode == 0, status.stderr
    assert "line 3" in status.stdout
    listed = server.client.get("/v1/functions/inboxfn/sources").json()
    (source,) = listed["sources"] if isinstance(listed, dict) else listed
    assert source["delivered"] == 2, source
