"""One sweep under each executor, side by side: wall time, and that the numbers agree.

Run: ``python benchmarks/executors.py`` (or ``make bench``). It runs
``configs/sweep-digits.yaml`` (six trials) from nothing, one after another, under:

* ``serial`` with every thread of this process (the default for ``jobs: 1``);
* ``serial`` with one thread, the reference the two below must match bit for bit;
* ``processes`` with ``jobs: 2`` (one thread each);
* ``ray`` with ``jobs: 2`` (one thread each, a local Ray instance; skipped without Ray).

It writes ``benchmarks/results/executors.json``: seconds per executor, the ratio to serial
with all threads, and whether every metrics line and index row equals the one-thread serial
run's. Only ratios from one run are comparable; the Ray figure includes starting Ray.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from robustlab.config import ExecutorConfig, load_experiment
from robustlab.experiments import run_experiment
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import TrialIndex

CONFIG = Path("configs/sweep-digits.yaml")
TIMING_KEYS = ("seconds", "time")


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _untimed(item)
            for key, item in value.items()
            if not any(mark in key for mark in TIMING_KEYS)
        }
    if isinstance(value, list):
        return [_untimed(item) for item in value]
    return value


def outcome(directory: Path) -> str:
    """Every trial's metrics and index row without timings, as one comparable string."""
    folder = ExperimentDirectory(directory)
    rows = sorted(TrialIndex(folder.index_file).rows(), key=lambda row: row.name)
    return json.dumps(
        {
            row.name: {
                "status": row.status,
                "config_hash": row.config_hash,
                "summary": _untimed(row.summary),
                "metrics": _untimed(folder.trial(row.name).read_metrics())
                if row.role == "trial"
                else None,
            }
            for row in rows
        },
        sort_keys=True,
    )


def timed_run(executor: str, jobs: int, threads: int, out: Path) -> tuple[float, str]:
    config = load_experiment(CONFIG)
    config = config.model_copy(
        update={"jobs": jobs, "executor": ExecutorConfig(type=executor), "device": "cpu"}
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        result = run_experiment(config, out, write_report=False)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(before)
    return seconds, outcome(result.directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/executors.json"))
    parser.add_argument("--note", default="", help="recorded in the results file")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    try:
        import ray  # noqa: F401

        with_ray = True
    except ImportError:
        with_ray = False
    cases = [
        ("serial", 1, threads, f"serial, {threads} threads"),
        ("serial", 1, 1, "serial, 1 thread (reference)"),
        ("processes", 2, threads, "processes, jobs 2"),
    ]
    if with_ray:
        cases.append(("ray", 2, threads, "ray (local), jobs 2"))
    rows = []
    reference = None
    with tempfile.TemporaryDirectory() as scratch:
        for index, (executor, jobs, thread_count, label) in enumerate(cases):
            seconds, numbers = timed_run(executor, jobs, thread_count, Path(scratch) / str(index))
            if label.endswith("(reference)"):
                reference = numbers
            rows.append(
                {
                    "case": label,
                    "executor": executor,
                    "jobs": jobs,
                    "threads_per_trial": max(1, thread_count // jobs),
                    "seconds": round(seconds, 1),
                    "numbers": numbers,
                }
            )
            print(f"{label:32s} {seconds:7.1f} s", flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        numbers = row.pop("numbers")
        row["speed_vs_serial_all_threads"] = round(base / row["seconds"], 2)
        one_thread = row["threads_per_trial"] == 1
        row["equal_to_one_thread_serial"] = numbers == reference if one_thread else None
    results = {
        "config": str(CONFIG),
        "trials": 6,
        "rows": rows,
        "ray_installed": with_ray,
        "note": args.note,
        "provenance": provenance(),
    }
    atomic_write_json(args.out, results)
    for row in rows:
        print(
            f"{row['case']:32s} {row['speed_vs_serial_all_threads']:5.2f}x  "
            f"same numbers as 1-thread serial: {row['equal_to_one_thread_serial']}"
        )


if __name__ == "__main__":
    main()
