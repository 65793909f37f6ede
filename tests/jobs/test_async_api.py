"""Async invocations against a real server: the native API, boto3's Event invoke and event
invoke config, retries and dead letters by error kind, destinations, idempotency, schedules."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import Server, write_bundle

HANDLER = """
import time

def handler(event, context):
    event = event if isinstance(event, dict) else {"value": event}
    if event.get("fail"):
        raise ValueError("asked to fail: " + str(event["fail"]))
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"request_id": context.aws_request_id, "event": event}
"""
FAST_RETRIES = {
    "COLDBREW_ASYNC_RETRY_DELAY_S": "0.2",
    "COLDBREW_ASYNC_POLL_S": "0.1",
    "COLDBREW_SCHEDULE_POLL_S": "0.2",
}


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A loopback webhook that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("async-home"), FAST_RETRIES)
    try:
        running.start()
        base = tmp_path_factory.mktemp("bundles")
        both = "[destinations]\non_success = 'results'\non_failure = 'results'\n"
        for name, extra in (
            ("work", both),
            ("sink", ""),
            ("hooked", ""),
            ("plain", ""),
            ("slowpoke", "timeout_s = 0.5\n" + both),
            ("narrow", "max_instances = 1\nmax_queue = 0\n" + both),
            ("limited", "rate_limit = 0.01\nburst = 1\n"),
        ):
            config = f"handler = 'handler:handler'\n{extra}"
            folder = write_bundle(base / name, HANDLER, config)
            response = running.deploy_folder(name, folder)
            assert response.status_code in (200, 201), response.text
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def lam(server: Server) -> Iterator[Any]:
    client = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}),
    )
    yield client
    client.close()


def submit(server: Server, name: str, event: Any, **headers: str) -> str:
    response = server.client.post(
        f"/v1/functions/{name}/invoke", params={"async": "1"}, json=event, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def event_state(server: Server, name: str, request_id: str) -> dict[str, Any]:
    return server.client.get(f"/v1/functions/{name}/events/{request_id}").json()


def results(server: Server, name: str) -> dict[str, dict[str, Any]]:
    found = server.client.get(f"/v1/functions/{name}/results").json()["results"]
    return {r["requestContext"]["requestId"]: r for r in found}


def test_native_async_runs_and_lands_in_results(server: Server) -> None:
    request_id = submit(server, "work", {"n": 1})
    record = wait_for(lambda: results(server, "work").get(request_id), what="the result")
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["functionArn"].endswith(":function:work:$LATEST")
    assert record["requestPayload"] == {"n": 1}
    assert record["responsePayload"] == {"request_id": request_id, "event": {"n": 1}}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "1"}
    assert event_state(server, "work", request_id)["state"] == "succeeded"


def test_header_form_and_unknown_function(server: Server) -> None:
    response = server.client.post(
        "/v1/functions/work/invoke",
        json={"n": 2},
        headers={"X-Coldbrew-Invocation-Type": "Event"},
    )
    assert response.status_code == 202
    request_id = response.json()["request_id"]
    assert response.headers["x-request-id"] == request_id
    wait_for(lambda: request_id in results(server, "work"), what="the header-form event")
    missing = server.client.post("/v1/functions/nope/invoke?async=1", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    huge = server.client.post("/v1/functions/work/invoke?async=1", content=b"1" * 300_000)
    assert huge.status_code == 413


def test_idempotency_key_makes_a_retried_submit_a_no_op(server: Server) -> None:
    first = server.client.post(
        "/v1/functions/plain/invoke?async=1",
        json={"n": 3},
        headers={"X-Coldbrew-Idempotency-Key": "order-17"},
    )
    again = server.client.post(
        "/v1/functions/plain/invoke?async=1",
        json={"n": 3},
        headers={"X-Coldbrew-Idempotency-Key": "order-17"},
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["status"] == "queued" and again.json()["status"] == "duplicate"
    assert again.json()["request_id"] == first.json()["request_id"]
    events = server.client.get("/v1/functions/plain/events").json()["events"]
    assert [e["idempotency_key"] for e in events].count("order-17") == 1


def test_limits_are_charged_once_at_acceptance(server: Server) -> None:
    """The function allows one event per 100 s: the first is accepted, its retried submit (same
    key) is a no-op that costs nothing, a new one is refused with 429 at once."""
    key = {"X-Coldbrew-Idempotency-Key": "once"}
    first = server.client.post("/v1/functions/limited/invoke?async=1", json={}, headers=key)
    again = server.client.post("/v1/functions/limited/invoke?async=1", json={}, headers=key)
    other = server.client.post("/v1/functions/limited/invoke?async=1", json={})
    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 429)
    assert other.json()["error"]["code"] == "RATE_LIMITED"
    assert again.json() == {"request_id": first.json()["request_id"], "status": "duplicate"}
    # Its run is not limited again.
    wait_for(
        lambda: event_state(server, "limited", first.json()["request_id"])["state"] == "succeeded",
        what="the limited event's run",
    )


def test_function_errors_are_retried_then_dead_lettered(server: Server) -> None:
    request_id = submit(server, "work", {"fail": "always"})
    record = wait_for(lambda: results(server, "work").get(request_id), what="the failure")
    context = record["requestContext"]
    assert context["condition"] == "RetriesExhausted"
    assert context["approximateInvokeCount"] == 3  # the first run and Lambda's 2 retries
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert "asked to fail" in record["responsePayload"]["errorMessage"]

    def dead_letters() -> list[dict[str, Any]]:
        letters = server.client.get("/v1/functions/work/dlq").json()["dead_letters"]
        return [d for d in letters if d["request_id"] == request_id]

    # The on-failure destination is sent before the dead letter is committed: wait for both.
    [letter] = wait_for(dead_letters, what="the dead letter")
    assert letter["reason"] == "RetriesExhausted" and letter["attempts"] == 3
    assert letter["error"]["type"] == "ValueError"
    shown = server.client.get(f"/v1/functions/work/dlq/{request_id}").json()
    assert json.loads(shown["payload"]) == {"fail": "always"}
    # Each attempt was metered like a sync call, under the event's request id.
    usage = server.client.get("/v1/usage", params={"function": "work"}).json()["invocations"]
    attempts = [u for u in usage if u["request_id"] == request_id]
    assert len(attempts) == 3 and {u["status"] for u in attempts} == {"FUNCTION_ERROR"}


def test_timeouts_are_function_errors_with_lambdas_error_type(server: Server, lam: Any) -> None:
    lam.put_function_event_invoke_config(
        FunctionName="slowpoke",
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": "results"}},
    )
    request_id = submit(server, "slowpoke", {"sleep": 3})
    record = wait_for(lambda: results(server, "slowpoke").get(request_id), 40, "the timeout")
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "Sandbox.Timedout"


def test_throttles_are_retried_without_spending_retries(server: Server, lam: Any) -> None:
    """One instance, no queue: concurrent events are THROTTLED and go back to the queue with
    backoff; with MaximumRetryAttempts=0 they still all succeed in the end."""
    lam.put_function_event_invoke_config(FunctionName="narrow", MaximumRetryAttempts=0)
    ids = [submit(server, "narrow", {"sleep": 0.5, "i": i}) for i in range(3)]
    found = wait_for(
        lambda: (r := results(server, "narrow")) and all(i in r for i in ids) and r,
        40,
        "every throttled event",
    )
    assert all(found[i]["requestContext"]["condition"] == "Success" for i in ids)
    states = [event_state(server, "narrow", i) for i in ids]
    assert max(s["attempts"] for s in states) >= 2  # some were throttled first
    assert all(s["failures"] == 0 for s in states)
    assert any((s["last_error"] or {}).get("code") == "THROTTLED" for s in states), states


def test_lambda_event_invoke_config_round_trip(server: Server, lam: Any) -> None:
    with pytest.raises(ClientError) as missing:
        lam.get_function_event_invoke_config(FunctionName="plain")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    put = lam.put_function_event_invoke_config(
        FunctionName="plain",
        MaximumRetryAttempts=0,
        MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": "results"}},
    )
    assert put["MaximumRetryAttempts"] == 0 and put["MaximumEventAgeInSeconds"] == 120
    got = lam.get_function_event_invoke_config(FunctionName="plain")
    assert got["DestinationConfig"]["OnFailure"]["Destination"] == "results"
    assert got["FunctionArn"].endswith(":function:plain:$LATEST")
    updated = lam.update_function_event_invoke_config(
        FunctionName="plain", MaximumEventAgeInSeconds=3600
    )
    assert updated["MaximumRetryAttempts"] == 0 and updated["MaximumEventAgeInSeconds"] == 3600
    listed = lam.list_function_event_invoke_configs(FunctionName="plain")
    assert len(listed["FunctionEventInvokeConfigs"]) == 1
    for bad in ({"MaximumRetryAttempts": 3}, {"MaximumEventAgeInSeconds": 21601}):
        with pytest.raises(ClientError) as refused:
            lam.put_function_event_invoke_config(FunctionName="plain", **bad)
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as bad_destination:
        lam.put_function_event_invoke_config(
            FunctionName="plain",
            DestinationConfig={"OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:1:q"}},
        )
    assert bad_destination.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as unknown:
        lam.put_function_event_invoke_config(FunctionName="nope", MaximumRetryAttempts=1)
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # MaximumRetryAttempts=0 applies: one attempt, then the failure destination.
    response = lam.invoke(
        FunctionName="plain", InvocationType="Event", Payload=json.dumps({"fail": "once"})
    )
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    record = wait_for(lambda: results(server, "plain").get(request_id), what="the dead letter")
    assert record["requestContext"]["approximateInvokeCount"] == 1
    lam.delete_function_event_invoke_config(FunctionName="plain")
    with pytest.raises(ClientError):
        lam.get_function_event_invoke_config(FunctionName="plain")


def test_boto3_event_with_client_context_idempotency_key(server: Server, lam: Any) -> None:
    context = base64.b64encode(json.dumps({"custom": {"idempotency_key": "k-1"}}).encode())
    ids = [
        lam.invoke(
            FunctionName="work",
            InvocationType="Event",
            Payload=b'{"n": 5}',
            ClientContext=context.decode(),
        )["ResponseMetadata"]["RequestId"]
        for _ in range(2)
    ]
    assert ids[0] == ids[1]
    wait_for(lambda: ids[0] in results(server, "work"), what="the keyed event")


def test_destinations_webhook_and_function(server: Server, lam: Any) -> None:
    receiver = Receiver()
    try:
        lam.put_function_event_invoke_config(
            FunctionName="hooked",
            MaximumRetryAttempts=0,
            DestinationConfig={
                "OnSuccess": {"Destination": receiver.url},
                "OnFailure": {"Destination": "function:sink"},
            },
        )
        ok = submit(server, "hooked", {"n": 6})
        body = wait_for(lambda: receiver.bodies, what="the webhook")[0]
        assert body["requestContext"]["requestId"] == ok
        assert body["requestContext"]["condition"] == "Success"
        assert body["responsePayload"]["event"] == {"n": 6}

        failed = submit(server, "hooked", {"fail": "for the sink"})

        def sink_saw_it() -> Any:
            for event in server.client.get("/v1/functions/sink/events").json()["events"]:
                if event["state"] == "succeeded" and event["idempotency_key"].startswith(
                    f"destination:hooked:{failed}:"
                ):
                    return event
            return None

        wait_for(sink_saw_it, what="the on-failure function destination")
    finally:
        receiver.close()


def test_redrive_runs_a_dead_letter_again(server: Server, lam: Any) -> None:
    lam.put_function_event_invoke_config(FunctionName="sink", MaximumRetryAttempts=0)
    request_id = submit(server, "sink", {"fail": "now"})
    wait_for(
        lambda: event_state(server, "sink", request_id)["state"] == "failed", what="dead letter"
    )
    moved = server.client.post("/v1/functions/sink/dlq/redrive", json={"request_ids": [request_id]})
    assert moved.json() == {"redriven": [request_id]}
    wait_for(
        lambda: (
            event_state(server, "sink", request_id)["attempts"] == 2
            and event_state(server, "sink", request_id)["state"] == "failed"
        ),
        what="the redriven run",
    )
    assert server.client.delete("/v1/functions/sink/dlq").json()["purged"] >= 1
    assert server.client.get("/v1/functions/sink/dlq").json()["dead_letters"] == []


def test_schedule_fires_through_the_queue(server: Server) -> None:
    added = server.client.post(
        "/v1/functions/plain/schedules",
        json={"name": "tick", "expression": "rate(1 second)", "input": {"from": "schedule"}},
    )
    assert added.status_code == 201, added.text
    try:

        def fired() -> Any:
            found = server.client.get("/v1/functions/plain/schedules").json()["schedules"]
            return found[0]["last_request_id"] if found and found[0]["last_tick"] else None

        request_id = wait_for(fired, what="a tick")
        wait_for(
            lambda: event_state(server, "plain", request_id)["state"] == "succeeded",
            what="the tick's run",
        )
    finally:
        server.client.delete("/v1/functions/plain/schedules/tick")
    bad = server.client.post(
        "/v1/functions/plain/schedules", json={"name": "x", "expression": "rate(5 weeks)"}
    )
    assert bad.status_code == 400 and "weeks" in bad.json()["error"]["message"]


def test_metrics_count_async_outcomes(server: Server) -> None:
    text = server.client.get("/metrics").text
    assert 'coldbrew_async_events_total{function="work",outcome="accepted"}' in text
    assert 'coldbrew_async_events_total{function="work",outcome="dead_lettered"}' in text
    assert "coldbrew_async_queue_depth" in text


def test_bad_schedule_in_the_bundle_is_refused_at_deploy(server: Server, tmp_path: Path) -> None:
    config = "handler = 'handler:handler'\n[[schedule]]\nexpression = 'cron(0 12 * * * *)'\n"
    folder = write_bundle(tmp_path / "bad", HANDLER, config)
    response = server.deploy_folder("badschedule", folder)
    assert response.status_code == 400
    assert "day-of-month" in response.json()["error"]["message"]
