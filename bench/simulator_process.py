"""The simulator as a separate process, so it does not share the measured client's CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

LISTENING = re.compile(r"simulator listening on (http://\S+)")


@contextmanager
def simulator_process(*options: str) -> Iterator[str]:
    """Start ``mobile-status simulator --port 0 OPTIONS``; yield its base URL."""
    command: Sequence[str] = [
        sys.executable,
        "-m",
        "mobile_status_dagster.simulator",
        "--port",
        "0",
        *options,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
