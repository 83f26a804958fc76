"""An append-only journal of answers, written as they arrive.

Each answer's lines go to the operating system with one ``write`` call before the
next number is started, so a process killed at any moment (SIGKILL included) loses
only the answers still in flight. DuckDB then takes the journal in segments: the
writer rotates to a new segment, folds the closed one in one transaction, deletes it.

A segment is locked (``flock``) by its writer for as long as it exists; a leftover
segment that can be locked has no live writer and is folded by the next run.

Whatever a leftover segment says is recorded as paid answers, so nothing another user
could have planted is folded: the directory must be the user's own and writable by no
one else (:func:`~mobile_status_dagster.core.files.private_directory`, created
``0700``), and a leftover must bear a name this module writes (:data:`SEGMENT_NAME`)
and be a regular file of the user's (opened with ``O_NOFOLLOW``). Segments are created
``0600``. Anything else is left where it is, with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from mobile_status_dagster.core.client.results import Attempt, CheckResult
from mobile_status_dagster.core.errors import ConfigurationError, NumberRejectedError
from mobile_status_dagster.core.files import (
    FILE_MODE,
    file_problem,
    literal_path,
    private_directory,
)

log = logging.getLogger("mobile_status_dagster.core.engine")

SUFFIX = ".jsonl"
SEGMENT_NAME = re.compile(r"(?P<run_id>[^/\x00]+)-(?P<pid>[0-9]+)-(?P<sequence>[0-9]{6,})\.jsonl")
"""The names of journal segments: ``<run_id>-<pid>-<sequence, 6 digits or more>.jsonl``.

:func:`segment_name` writes only names that match, and :func:`leftover_segments`
folds only files whose names match, so the two cannot drift apart."""


def segment_name(run_id: str, pid: int, sequence: int) -> str:
    """The name of segment ``sequence`` of ``run_id`` written by process ``pid``.

    Raises:
        ConfigurationError: the run id cannot be part of a segment name (it holds a
            ``/`` or a NUL), so a later run could not recover the segment.
    """
    name = f"{run_id}-{pid}-{sequence:06d}{SUFFIX}"
    if SEGMENT_NAME.fullmatch(name) is None:
        raise ConfigurationError("run_id", f"{run_id!r} cannot be part of a journal file name")
    return name


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


_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""A segment is opened without following a symlink, and without blocking on a FIFO."""


def _create_locked(path: Path) -> Segment:
    fd = os.open(path, _FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody else holds it
    return Segment(path, fd)


def _open_leftover(path: Path) -> Segment | None:
    """``path`` locked, if it is a trusted segment no live writer holds; else ``None``.

    Checked before opening (``lstat``: never open a FIFO or a device) and again on the
    descriptor opened with ``O_NOFOLLOW`` (``fstat``: the file that will be folded).
    """
    fd = -1
    try:
        problem = file_problem(os.lstat(path))
        if problem is None:
            fd = os.open(path, _FLAGS)
            problem = file_problem(os.fstat(fd))
    except FileNotFoundError:  # folded meanwhile by another run
        return None
    except OSError as error:  # e.g. replaced by a symlink since the lstat (ELOOP)
        problem = f"it cannot be opened as a file ({error.strerror})"
    if problem is not None:
        if fd >= 0:
            os.close(fd)
        log.warning(
            "not folding journal segment %s: %s; left in place (fold it as its owner, "
            "or remove it)",
            path,
            problem,
        )
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Segment(path, fd)


class Journal:
    """The answer journal of one run: segments named :data:`SEGMENT_NAME` in ``directory``.

    Raises:
        UntrustedFileError: ``directory`` is not the user's own, or others may write it.
        ConfigurationError: ``run_id`` cannot be part of a segment name, or the segment
            path cannot be read back literally by DuckDB (before anything is paid).
    """

    def __init__(self, directory: Path, run_id: str, *, unit_price: Decimal, currency: str) -> None:
        self.directory = private_directory(directory)
        self._pid = os.getpid()
        self._run_id = run_id
        try:
            literal_path(directory / segment_name(run_id, self._pid, 1))
        except ValueError as error:
            raise ConfigurationError("run_id", str(error)) from None
        self._price = str(unit_price)
        self._currency = currency
        self._sequence = 0
        self.current = self._new_segment()
        self.pending = 0
        """Answers written to :attr:`current` (the segment not handed out for folding)."""

    def _new_segment(self) -> Segment:
        self._sequence += 1
        path = self.directory / segment_name(self._run_id, self._pid, self._sequence)
        segment = _create_locked(path)
        header = {"run": self._run_id, "price": self._price, "cur": self._currency}
        os.write(segment.fd, (json.dumps(header) + "\n").encode("utf-8", "replace"))
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
        self.pending += 1

    def _write_lines(self, lines: list[str]) -> None:
        # "replace": a lone surrogate (in a set id, say) must not lose a paid answer.
        os.write(self.current.fd, ("\n".join(lines) + "\n").encode("utf-8", "replace"))

    def rotate(self) -> Segment:
        """Start a new segment; return the previous one, still locked, for folding."""
        previous = self.current
        self.current = self._new_segment()
        self.pending = 0
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
    """Segments no live process holds: left by a run that died. Yielded locked.

    Only files named :data:`SEGMENT_NAME` that are regular files of the current user,
    writable by nobody else, are yielded; other ``*.jsonl`` files are left in place with
    a warning.

    Raises:
        UntrustedFileError: ``directory`` is not the user's own, or others may write it.
    """
    if not directory.exists():
        return
    private_directory(directory)
    for name in sorted(os.listdir(directory)):
        if SEGMENT_NAME.fullmatch(name) is None:
            if name.endswith(SUFFIX):
                log.warning("not folding %s: not a journal segment name", directory / name)
            continue
        segment = _open_leftover(directory / name)
        if segment is not None:
            yield segment
