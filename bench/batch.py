"""A 100,000-row CSV through the breast-cancer forest: a coldbrew batch job against a plain
in-process ``predict_proba`` loop over the same file, in one run.

Contenders, each reading the same CSV and writing one result per row:

- ``in-process loop``: this process reads the CSV (``csv`` module), calls the estimator's
  ``predict_proba`` on chunks of 64 rows (the function's batch size) and writes
  ``row,probabilities`` lines: the floor of what any server can add to.
- ``in-process, row at a time``: ``predict_proba`` per row, on the first ``--row-sample`` rows
  (a forest's per-call overhead; rows/s extrapolated).
- ``in-process, whole file``: every row read, one ``predict_proba`` call, written: the ceiling
  of this machine for this model (no streaming, all in memory).
- ``coldbrew batch``: ``coldbrew batch submit forest rows.csv --out results.csv --wait`` (the
  CLI, as a user runs it) against ``coldbrew serve``: upload, check of every row, chunks of 64
  rows each sent as one metered invocation through the data plane (the ``packed`` shape of
  model functions; the batcher may merge concurrent chunks), 4 chunks at a time, per-chunk
  commits, ordered merge, download. Timed end to end (wall) and as the server's own
  run (``rows_per_s`` of the job).

The coldbrew results are checked against the in-process probabilities row by row.

    python bench/batch.py [--rows 100000] [--repeats 1] [--out bench/results/batch.json]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Coldbrew, managed, train_forest, write_bundle

CHUNK = 64


def write_input(path: Path, rows: int) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([name.replace(" ", "_") for name in data.feature_names])
        for index in range(rows):
            writer.writerow([repr(float(v)) for v in data.data[index % len(data.data)]])


def in_process(model: Any, source: Path, out: Path) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    probabilities: list[np.ndarray] = []
    with source.open(newline="") as file, out.open("w", newline="") as sink:
        reader = csv.reader(file)
        next(reader)
        writer = csv.writer(sink)
        writer.writerow(["row", "probabilities"])
        row = 0
        chunk: list[list[float]] = []
        for fields in reader:
            chunk.append([float(v) for v in fields])
            if len(chunk) == CHUNK:
                row = _predict(model, chunk, row, writer, probabilities)
                chunk = []
        if chunk:
            _predict(model, chunk, row, writer, probabilities)
    return time.perf_counter() - started, np.concatenate(probabilities)


def _predict(model: Any, chunk: list[list[float]], row: int, writer: Any, sink: list) -> int:
    found = model.predict_proba(np.asarray(chunk))
    sink.append(found)
    writer.writerows([row + i, json.dumps(p.tolist())] for i, p in enumerate(found))
    return row + len(chunk)


def whole_file(model: Any, source: Path, out: Path) -> float:
    """Read every row, one ``predict_proba`` call, write: the ceiling of this machine."""
    started = time.perf_counter()
    with source.open(newline="") as file:
        reader = csv.reader(file)
        next(reader)
        matrix = np.asarray([[float(v) for v in fields] for fields in reader])
    found = model.predict_proba(matrix)
    with out.open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(["row", "probabilities"])
        writer.writerows([i, json.dumps(p.tolist())] for i, p in enumerate(found))
    return len(found) / (time.perf_counter() - started)


def row_at_a_time(model: Any, source: Path, sample: int) -> float:
    with source.open(newline="") as file:
        reader = csv.reader(file)
        next(reader)
        rows = [[float(v) for v in fields] for fields in itertools.islice(reader, sample)]
    started = time.perf_counter()
    for row in rows:
        model.predict_proba(np.asarray([row]))
    return sample / (time.perf_counter() - started)


def coldbrew_batch(server: Coldbrew, source: Path, out: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "COLDBREW_URL": server.url}
    argv = [sys.executable, "-m", "coldbrew.cli.main", "batch", "submit", "forest", str(source)]
    started = time.perf_counter()
    done = subprocess.run(
        [*argv, "--out", str(out), "--wait", "--json"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"coldbrew batch failed: {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def check(results: Path, expected: np.ndarray) -> None:
    with results.open(newline="") as file:
        for index, record in enumerate(csv.DictReader(file)):
            if int(record["row"]) != index:
                raise AssertionError(f"row {index} out of order: {record['row']}")
            got = json.loads(record["output"])["probabilities"][0]
            if not np.allclose(got, expected[index]):
                raise AssertionError(f"row {index}: {got} != {expected[index].tolist()}")
    if index + 1 != len(expected):
        raise AssertionError(f"{index + 1} results for {len(expected)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--row-sample", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/batch.json"))
    args = parser.parse_args()
    import joblib

    with (
        tempfile.TemporaryDirectory(prefix="coldbrew-bench-batch-") as tmp,
        managed(Path(tmp)) as procs,
    ):
        work = Path(tmp)
        model_info = train_forest(work / "model")
        model = joblib.load(model_info.path)
        source = work / "rows.csv"
        write_input(source, args.rows)
        server = Coldbrew(
            procs,
            work / "home",
            env={"COLDBREW_PRELOAD_MODULES": '["sklearn.ensemble", "joblib", "numpy"]'},
        )
        server.deploy("forest", write_bundle(work / "bundle", model_info, ""))
        loops, walls, runs = [], [], []
        expected = None
        for repeat in range(args.repeats):
            seconds, expected = in_process(model, source, work / f"local-{repeat}.csv")
            loops.append(args.rows / seconds)
            wall, job = coldbrew_batch(server, source, work / f"results-{repeat}.csv")
            walls.append(args.rows / wall)
            runs.append(job["rows_per_s"])
            check(work / f"results-{repeat}.csv", expected)
            print(
                f"repeat {repeat + 1}: in-process {loops[-1]:,.0f} rows/s, coldbrew "
                f"{walls[-1]:,.0f} rows/s end to end ({runs[-1]:,.0f} rows/s run)",
                flush=True,
            )
        per_row = row_at_a_time(model, source, args.row_sample)
        ceiling = whole_file(model, source, work / "whole.csv")
        load = os.getloadavg()[0]
    loop, wall, run = (statistics.median(v) for v in (loops, walls, runs))
    result = {
        "rows": args.rows,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "in_process_rows_per_s": loop,
        "in_process_row_at_a_time_rows_per_s": per_row,
        "in_process_whole_file_rows_per_s": ceiling,
        "load_average_1m_at_end": load,
        "coldbrew_end_to_end_rows_per_s": wall,
        "coldbrew_run_rows_per_s": run,
        "coldbrew_vs_in_process": wall / loop,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print("| contender | rows/s (median) | vs in-process loop |")
    print("|---|---:|---:|")
    print(f"| in-process `predict_proba`, chunks of {CHUNK} | {loop:,.0f} | 1.00 |")
    print(f"| in-process `predict_proba`, row at a time | {per_row:,.0f} | {per_row / loop:.2f} |")
    whole = "in-process `predict_proba`, whole file in one call"
    print(f"| {whole} | {ceiling:,.0f} | {ceiling / loop:.2f} |")
    print(f"| coldbrew batch, end to end (CLI) | {wall:,.0f} | {wall / loop:.2f} |")
    print(f"| coldbrew batch, server run only | {run:,.0f} | {run / loop:.2f} |")


if __name__ == "__main__":
    main()
