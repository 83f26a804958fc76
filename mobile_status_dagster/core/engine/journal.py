"""An append-only journal of answers, written as they arrive.

Each answer's lines go to the operating system with one ``write`` call before the
next number is started, so a process killed at any moment (SIGKILL included) loses
only the answers still in flight. DuckDB then takes the journal in segments: the
writer rotates to a new segment, folds the closed one in one transaction, deletes it.

A segment is locked (``flock``) by its writer for as long as it exists; a leftover
segment that can be locked has no live writer and is folded by the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from mobile_status_dagster.core.client.results import Attempt, CheckResult
from mobile_status_dagster.core.errors import NumberRejectedError

SUFFIX = ".jsonl"


@dataclass
class Segment:
    """A journal file this process holds locked."""

    path: Path
    fd: int

    def discard(self) -> None:
        """Delete the segment (after it was folded) and release its lock."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def release(self) -> None:
        """Release the lock but keep the file, for a later run to fold."""
        os.close(self.fd)


def _open_locked(path: Path, *, create: bool) -> Segment | None:
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Segment(path, fd)


class Journal:
    """The answer journal of one run: ``<directory>/<run_id>-<pid>-<n>.jsonl`` segments."""

    def __init__(self, directory: Path, run_id: str, *, unit_price: Decimal, currency: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._prefix = f"{run_id}-{os.getpid()}"
        self._run_id = run_id
        self._price = str(unit_price)
        self._currency = currency
        self._sequence = 0
        self.current = self._new_segment()

    def _new_segment(self) -> Segment:
        self._sequence += 1
        path = self.directory / f"{self._prefix}-{self._sequence:06d}{SUFFIX}"
        segment = _open_locked(path, create=True)
        if segment is None:  # pragma: no cover - O_EXCL on a fresh name cannot be locked
            raise RuntimeError(f"journal segment {path} is locked by another process")
        header = {"run": self._run_id, "price": self._price, "cur": self._currency}
        os.write(segment.fd, (json.dumps(header) + "\n").encode())
        return segment

    def write(self, result: CheckResult, set_id: str, reason: str) -> None:
        """Persist every attempt of ``result``, marking the one whose outcome the cache keeps.

        ``reason`` is why the number was sent (see ``store.plan.plan_run``). The lines
        reach the operating system in one ``write`` call before this returns.
        """
        settled = _settled_attempt(result)
        lines = []
        for attempt in result.attempts:
            line = _attempt_line(result.mobile, set_id, reason, attempt)
            if attempt is settled:
                line["keep"] = True
                if result.status is not None and result.status is not attempt.status:
                    line["keep_st"] = int(result.status)
            lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
        self._write_lines(lines)

    def _write_lines(self, lines: list[str]) -> None:
        os.write(self.current.fd, ("\n".join(lines) + "\n").encode())

    def rotate(self) -> Segment:
        """Start a new segment; return the previous one, still locked, for folding."""
        previous = self.current
        self.current = self._new_segment()
        return previous


def _attempt_line(mobile: str, set_id: str, reason: str, attempt: Attempt) -> dict[str, Any]:
    """One attempt in the journal format of ``store.record.JOURNAL_KEYS``; empty values left out."""
    line: dict[str, Any] = {
        "m": mobile,
        "s": set_id,
        "why": reason,
        "n": attempt.attempt,
        "t": int(attempt.requested_at.timestamp() * 1_000_000),
        "ms": round(attempt.latency_ms, 3),
        "h": attempt.http_status,
        "c": attempt.code,
        "msg": attempt.message,
        "o": attempt.order_number,
        "st": None if attempt.status is None else int(attempt.status),
        "op": attempt.operator,
        "b": attempt.billed or None,
        "pb": attempt.possibly_billed or None,
        "e": None if attempt.error is None else type(attempt.error).__name__,
    }
    return {key: value for key, value in line.items() if value is not None}


def _settled_attempt(result: CheckResult) -> Attempt | None:
    """The attempt whose outcome the cache keeps: an answer, or a 4003 rejection."""
    if result.answered or isinstance(result.error, NumberRejectedError):
        return result.attempts[-1]
    return None


def leftover_segments(directory: Path) -> Iterator[Segment]:
    """Segments no live process holds: left by a run that died. Yielded locked."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        segment = _open_locked(path, create=False)
        if segment is not None:
            yield segment
