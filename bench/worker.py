"""Measurements that need their own process (peak RSS): ``python -m bench.worker TASK ARGS``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.connection import connect_with_retry
from mobile_status_dagster.core.store.plan import plan_run
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES
from mobile_status_dagster.core.store.source import Partition, SourceTable


def plan(database: str, set_id: str) -> dict[str, float]:
    """Normalize, de-duplicate and plan one set against the cache, spool included."""
    spool = Path(database + ".bench-spool.parquet")
    with connect_with_retry(database) as conn:  # the library's connection settings
        started = time.perf_counter()
        result = plan_run(
            conn,
            SourceTable(),
            [Partition(set_id)],
            tables=DEFAULT_TABLES,
            freshness=Freshness(),
            now=datetime.now(UTC),
            spool=spool,
        )
        seconds = time.perf_counter() - started
    spool.unlink(missing_ok=True)
    return {"seconds": seconds, "to_send": result.to_send, "peak_rss_mb": peak_rss_mb()}


def plan_in_own_process(database: Path | str, set_id: str) -> dict[str, float]:
    """:func:`plan` run in a fresh interpreter, so its peak RSS is the planning's own."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.worker", "plan", str(database), set_id],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def peak_rss_until_exit(process: subprocess.Popen[bytes]) -> float:
    """The peak RSS in MB of ``process``, polled until it exits (``VmHWM`` is monotonic)."""
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, vm_hwm_mb(process.pid) or 0.0)
        time.sleep(0.05)
    return peak


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started its program.

    ``VmHWM``, not ``getrusage``: Linux carries ``ru_maxrss`` over ``fork`` and
    ``execve``, so a child of a big parent would report the parent's peak.
    """
    return vm_hwm_mb("self") or 0.0


def vm_hwm_mb(pid: int | str) -> float | None:
    """``VmHWM`` of a process from ``/proc`` in MB; ``None`` once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


if __name__ == "__main__":
    task, *args = sys.argv[1:]
    print(json.dumps({"plan": plan}[task](*args)))
