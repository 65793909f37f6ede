"""The rough edges a new user hits first: ``coldbrew cost estimate``, readable small dollar
figures, the sample trace that ``coldbrew simulate`` and ``cost --what-if`` use by default, and
a simulate report that fits 80 columns."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldbrew.cli.cost_estimate import estimate, measured
from coldbrew.cli.main import app
from coldbrew.cli.observe import _usd
from coldbrew.core.pricing import PriceTable
from coldbrew.scaling.simulate import TierCosts, default_candidates, format_report, simulate_trace
from coldbrew.scaling.simulate.trace import SAMPLE_TRACE, load_trace
from support import Server, write_bundle


def _runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "80", "COLDBREW_URL": None})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "$0"),
        (2.1e-6, "$0.00000210"),
        (3.4567e-5, "$0.0000346"),
        (0.00123, "$0.00123"),
        (0.5, "$0.5000"),
        (29.952, "$29.9520"),
        (1234.5, "$1,234.50"),
    ],
)
def test_small_dollars_keep_their_significant_digits(value: float, text: str) -> None:
    assert _usd(value) == text


def test_estimate_prices_a_month_as_lambda_bills() -> None:
    prices = PriceTable()
    r = estimate(prices, per_day=10_000, mean_billed_ms=45.0, memory_mb=512, always_on_hourly=0.1)
    n = 300_000
    gbs = n * 0.5 * 0.045
    assert r["invocations"] == n
    assert r["gb_seconds"] == pytest.approx(gbs)
    assert r["lambda"]["monthly_usd"] == pytest.approx(
        n * prices.per_request + gbs * prices.per_gb_second
    )
    assert r["always_on"]["monthly_usd"] == pytest.approx(0.1 * 24 * 30)
    assert r["cheaper"] == "serverless"
    assert r["lambda"]["per_million_usd"] == pytest.approx(r["lambda"]["monthly_usd"] / 0.3)


def test_measured_uses_billed_invocations_only() -> None:
    rows = [
        {"billed_ms": 10, "duration_ms": 9.2, "memory_mb": 256, "started_at": "2026-01-01T00"},
        {"billed_ms": 30, "duration_ms": 29.5, "memory_mb": 512, "started_at": "2026-01-02T00"},
        {"billed_ms": 0, "duration_ms": 0.0, "memory_mb": 512, "started_at": "2026-01-03T00"},
    ]
    seen = measured(rows)
    assert seen["invocations"] == 2 and seen["mean_billed_ms"] == 20
    assert seen["memory_mb"] == 512  # the newest billed row's


def test_sample_trace_is_small_documented_and_loads() -> None:
    files = sorted(SAMPLE_TRACE.glob("*.csv"))
    assert sum(f.stat().st_size for f in files) < 200_000
    for f in files:
        assert "Azure Functions Trace 2019" in f.read_text()[:1000]  # says whence
    trace = load_trace(SAMPLE_TRACE)
    assert len(trace.functions) == 8 and trace.minutes == 1440
    assert trace.invocations > 50_000
    assert all(f.memory_mb != 256.0 for f in trace.functions)  # memory rows matched


def test_simulate_report_fits_80_columns() -> None:
    report = simulate_trace(load_trace(SAMPLE_TRACE), default_candidates(), TierCosts())
    text = format_report(report)
    assert "p75 cold %" in text and "hybrid" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_simulate_and_what_if_run_without_a_trace(tmp_path: Path) -> None:
    runner = _runner()
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "out"), "--no-plot"])
    assert result.exit_code == 0, result.output
    assert "8 functions" in result.output and "fixed-10" in result.output
    result = runner.invoke(app, ["cost", "--what-if"])
    assert result.exit_code == 0, result.output
    assert "what if" in result.output and "512 MB" in result.output


def test_estimate_from_given_figures_needs_no_server() -> None:
    result = _runner().invoke(
        app,
        shlex.split(
            "cost estimate nothing-here --per-day 10000 --duration-ms 45 --memory-mb 512"
            " --budget 50 --url http://127.0.0.1:9"
        ),
    )
    assert result.exit_code == 0, result.output
    assert "$0.1725" in result.output and "within" in result.output


HANDLER = """
import time

def handler(event, context):
    time.sleep(0.02)
    return {"ok": True}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("cost-home"))
    server.start()
    try:
        folder = write_bundle(
            tmp_path_factory.mktemp("sleeper"),
            HANDLER,
            'handler = "handler:handler"\nmemory_mb = 256\n',
        )
        assert server.deploy_folder("sleeper", folder).status_code == 201
        yield server
    finally:
        server.stop()


def test_estimate_from_the_functions_own_meter(live: Server) -> None:
    runner = _runner()
    before = runner.invoke(
        app, ["cost", "estimate", "sleeper", "--per-day", "100", "--url", live.url]
    )
    assert before.exit_code == 1 and "invoke it a few times" in before.output
    for _ in range(5):
        assert live.invoke("sleeper", {}).status_code == 200
    result = runner.invoke(
        app,
        ["cost", "estimate", "sleeper", "--per-day", "10000", "--url", live.url, "--json"],
    )
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["measured"]["invocations"] == 5 and r["memory_mb"] == 256
    assert 20 <= r["mean_billed_ms"] < 200
    assert r["lambda"]["monthly_usd"] > 300_000 * PriceTable().per_request
    text = runner.invoke(
        app, ["cost", "estimate", "sleeper", "--per-day", "10000", "--url", live.url]
    )
    assert "measured over 5 invocations" in text.output and "always-on" in text.output
    assert max(len(line) for line in text.output.splitlines()) <= 80
    missing = runner.invoke(app, ["cost", "estimate", "nope", "--per-day", "1", "--url", live.url])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output


def test_cost_report_prints_per_million(live: Server) -> None:
    result = CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": None}).invoke(
        app, ["cost", "--url", live.url]
    )
    assert result.exit_code == 0, result.output
    assert "per 1M predictions" in result.output and "$0.000000 " not in result.output
