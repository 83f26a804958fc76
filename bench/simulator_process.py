"""The simulator as a separate process, so it does not share the measured client's CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mobile_status_dagster.simulator import ADMIN_HEADER

LISTENING = re.compile(r"simulator listening on (http://\S+)")
ADMIN_TOKEN = re.compile(r"simulator admin token: (\S+)")


class SimulatorURL(str):
    """The simulator's base URL (a plain ``str`` for every existing use), carrying the
    admin token its ``/_sim/...`` endpoints need: ``httpx.get(url + "/_sim/stats",
    headers=url.admin_headers)``."""

    admin_token: str

    def __new__(cls, url: str, admin_token: str) -> SimulatorURL:
        self = super().__new__(cls, url)
        self.admin_token = admin_token
        return self

    @property
    def admin_headers(self) -> dict[str, str]:
        """``{"X-Sim-Admin": admin_token}``."""
        return {ADMIN_HEADER: self.admin_token}


@contextmanager
def simulator_process(*options: str) -> Iterator[SimulatorURL]:
    """Start ``mobile-status simulator --port 0 OPTIONS``; yield its base URL (with the
    admin token it printed, see :class:`SimulatorURL`)."""
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
        token_line = process.stdout.readline() if match is not None else ""
        token = ADMIN_TOKEN.search(token_line)
        if match is None or token is None:
            raise RuntimeError(f"simulator did not start: {line + token_line!r}")
        yield SimulatorURL(match.group(1), token.group(1))
    finally:
        process.terminate()
        process.wait(timeout=10)
