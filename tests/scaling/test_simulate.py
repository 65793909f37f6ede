"""The simulator on small synthetic traces written in the test (the real one is optional)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from coldbrew.scaling.policies import Decision, FixedKeepAlive, WithVersionTemplate, hybrid_policy
from coldbrew.scaling.simulate import (
    Candidate,
    TierCosts,
    format_report,
    load_trace,
    run_simulation,
)
from coldbrew.scaling.simulate.replay import held_minutes, replay_function
from coldbrew.scaling.simulate.report import PolicyResult, compare

REAL_TRACE = Path("/work/shared/traces/azure-functions-2019-sample")


def write_trace(folder: Path, rows: dict[str, list[int]], memory_mb: float = 1024.0) -> Path:
    """An Azure-2019-layout trace: one row per function, one column per minute."""
    folder.mkdir(parents=True, exist_ok=True)
    minutes = len(next(iter(rows.values())))
    header = "HashFunction,HashApp,HashOwner," + ",".join(f"minute_{i + 1}" for i in range(minutes))
    lines = [header] + [f"{n},{n},{n}," + ",".join(map(str, c)) for n, c in rows.items()]
    (folder / "t_inv.csv").write_text("\n".join(lines) + "\n")
    mem = ["HashApp,HashOwner,SampleCount,AverageAllocatedMb"]
    mem += [f"{n},{n},1,{memory_mb}" for n in rows]
    (folder / "t_mem.csv").write_text("\n".join(mem) + "\n")
    return folder


def every(period: int, minutes: int = 60, count: int = 1) -> list[int]:
    return [count if m % period == 0 else 0 for m in range(minutes)]


@pytest.mark.parametrize(
    ("decision", "span", "instance", "template"),
    [
        (Decision(0, 10), 5, 5, 0),
        (Decision(0, 10), 30, 10, 0),
        (Decision(4.5, 2.1), 3, 0, 0),
        (Decision(4.5, 2.1), 5, 0.5, 0),
        (Decision(4.5, 2.1), 100, 2.1, 0),
        (Decision(4.5, 2.1, 10), 100, 2.1, 14.5),
        (Decision(0, 10, 30), 20, 10, 10),
    ],
)
def test_held_minutes(decision: Decision, span: float, instance: float, template: float) -> None:
    assert held_minutes(decision, span) == (pytest.approx(instance), pytest.approx(template))


@pytest.mark.parametrize(
    ("policy", "cold_starts", "idle_minutes", "added_ms"),
    [
        # Invoked at 0, 6, ..., 54: nine idle times of 5 min, then 5 min to the end.
        (FixedKeepAlive(10), 1, 50.0, 200.0),
        (FixedKeepAlive(1), 10, 10.0, 2000.0),
        (FixedKeepAlive(5), 1, 50.0, 200.0),
        # Fallback (240 min) for the first five idle times, then pre-warm 4.5 / until 6.6.
        (hybrid_policy("hybrid"), 1, 5 * 5 + 5 * 0.5, 200.0),
        # Same instance windows; cold starts from a version template would cost 5 ms.
        (WithVersionTemplate(FixedKeepAlive(1), 10), 10, 10.0, 200.0 + 9 * 5.0),
    ],
)
def test_replay_periodic_function(
    tmp_path: Path, policy, cold_starts: int, idle_minutes: float, added_ms: float
) -> None:
    trace = load_trace(write_trace(tmp_path, {"f": every(6)}))
    result = replay_function(trace.functions[0], policy, trace.minutes, TierCosts())
    assert (result.invocations, result.cold_starts) == (10, cold_starts)
    assert result.idle_instance_minutes == pytest.approx(idle_minutes)
    assert result.cold_start_ms == pytest.approx(added_ms)


def test_busy_minutes_are_not_idle(tmp_path: Path) -> None:
    """Invocations every minute: one cold start, no idle time, even with pre-warming."""
    trace = load_trace(write_trace(tmp_path, {"f": every(1, count=3)}))
    for policy in (FixedKeepAlive(10), hybrid_policy("hybrid")):
        result = replay_function(trace.functions[0], policy, trace.minutes, TierCosts())
        assert (result.cold_starts, result.invocations, result.idle_instance_minutes) == (1, 180, 0)


def test_memory_defaults_without_mem_file(tmp_path: Path) -> None:
    folder = write_trace(tmp_path, {"f": every(2)})
    (folder / "t_mem.csv").unlink()
    assert load_trace(folder).functions[0].memory_mb == 256.0


def row(name: str, family: str, cold: float, mem: float) -> PolicyResult:
    return PolicyResult(name, family, cold, 0, 0, mem, 0.0, 0.0, wasted_norm=mem)


FIXED = [
    row("fixed-1", "fixed", 50, 0.2),
    row("fixed-10", "fixed", 25, 1.0),
    row("fixed-60", "fixed", 10, 2.0),
]


@pytest.mark.parametrize(
    ("hybrid", "dominated_by", "cold_at_mem", "mem_at_cold"),
    [
        (row("h", "hybrid", 15, 1.0), [], 25.0, 1.667),
        (row("h", "hybrid", 30, 1.5), ["fixed-10"], 17.5, 0.84),
        (row("h", "hybrid", 60, 0.1), [], None, None),
        (row("h", "hybrid", 5, 3.0), [], None, None),
    ],
)
def test_pareto_comparison(
    hybrid: PolicyResult,
    dominated_by: list[str],
    cold_at_mem: float | None,
    mem_at_cold: float | None,
) -> None:
    (c,) = compare([*FIXED, hybrid])
    assert c.dominated_by == dominated_by
    assert c.fixed_cold_pct_at_same_memory == pytest.approx(cold_at_mem, abs=1e-3)
    assert c.fixed_memory_at_same_cold_pct == pytest.approx(mem_at_cold, abs=1e-3)


def test_run_simulation_writes_report_and_plot(tmp_path: Path) -> None:
    folder = write_trace(
        tmp_path / "trace",
        {"regular": every(6, 600), "busy": every(1, 600), "rare": every(250, 600)},
    )
    candidates = [Candidate(FixedKeepAlive(m), "fixed") for m in (1, 10, 60)]
    candidates.append(Candidate(hybrid_policy("hybrid"), "hybrid"))
    report = run_simulation(folder, tmp_path / "out", candidates)
    text = format_report(report)
    assert {p.name for p in report.policies} == {"fixed-1", "fixed-10", "fixed-60", "hybrid"}
    assert next(p for p in report.policies if p.name == "fixed-10").wasted_norm == 1.0
    assert "hybrid" in text and "p75 cold %" in text
    assert (tmp_path / "out" / "report.txt").read_text().strip() == text.strip()
    assert (tmp_path / "out" / "keepalive.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not REAL_TRACE.exists(), reason="Azure 2019 sample trace not present")
def test_real_trace_hybrid_is_pareto_better(tmp_path: Path) -> None:
    started = time.perf_counter()
    report = run_simulation(REAL_TRACE, tmp_path, plot=False)
    assert time.perf_counter() - started < 20
    assert report.comparisons and all(c.pareto_better for c in report.comparisons)
    assert np.isclose(next(p for p in report.policies if p.name == "fixed-10").wasted_norm, 1.0)


def test_original_dataset_layout_over_several_days(tmp_path: Path) -> None:
    """The Azure dataset's own files (HashOwner first, a Trigger column, minutes named 1..N),
    one per day: days are joined in order, a function missing on a day counts zero there, and
    one function listed under two triggers is one function."""
    header = "HashOwner,HashApp,HashFunction,Trigger,1,2,3"
    day1 = [header, "o,a1,f1,http,1,0,2", "o,a1,f1,timer,0,1,0", "o,a2,f2,queue,0,0,5"]
    day2 = [header, "o,a1,f1,http,3,0,0", "o,a3,f3,http,0,4,0"]
    (tmp_path / "invocations_per_function_md.anon.d01.csv").write_text("\n".join(day1) + "\n")
    (tmp_path / "invocations_per_function_md.anon.d02.csv").write_text("\n".join(day2) + "\n")
    memory = "HashOwner,HashApp,SampleCount,AverageAllocatedMb\no,a1,10,300\no,a3,10,128\n"
    (tmp_path / "app_memory_percentiles.anon.d01.csv").write_text(memory)
    trace = load_trace(tmp_path, default_memory_mb=256.0)
    assert trace.minutes == 6
    by_name = {f.name: f for f in trace.functions}
    assert by_name["f1"].counts.tolist() == [1, 1, 2, 3, 0, 0]
    assert by_name["f2"].counts.tolist() == [0, 0, 5, 0, 0, 0]
    assert by_name["f3"].counts.tolist() == [0, 0, 0, 0, 4, 0]
    assert (by_name["f1"].memory_mb, by_name["f2"].memory_mb, by_name["f3"].memory_mb) == (
        300.0,
        256.0,
        128.0,
    )
    assert trace.invocations == 16


def test_a_file_without_function_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x_inv.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="HashFunction"):
        load_trace(tmp_path)
