"""The simulator's record of every request: in memory, optionally as JSON lines."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import IO, Any, NamedTuple

from mobile_status_dagster.core.files import FILE_MODE


class LedgerEntry(NamedTuple):
    """One request to ``/mobile/check`` as the provider saw and answered it."""

    seq: int
    """1, 2, 3, ... over the provider's lifetime (not restarted by a reset)."""
    time: float
    """When the request was decided, seconds since the epoch."""
    mobile: str | None
    """The ``mobile`` parameter exactly as sent (may be malformed or missing)."""
    token_ok: bool
    http_status: int
    code: int | None
    """The JSON ``code``; ``None`` for an HTTP 500 or a malformed body."""
    check: int | None
    operator: str | None
    order_number: str | None
    billed: bool
    fault: str | None
    """The injected fault, e.g. ``"slow"`` or ``"operator_timeout"``; ``None`` if none."""

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict."""
        return self._asdict()


def _open_private_append(path: Path) -> IO[str]:
    """``path`` opened for appending, created :data:`FILE_MODE` (it holds full numbers).

    Append, never truncate: the file is the bill and may span restarts. A symbolic
    link at ``path`` is refused (``O_NOFOLLOW``), so the ledger is never written
    through a link another user planted.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, FILE_MODE)  # an OSError names the path
    return os.fdopen(descriptor, "a", encoding="utf-8")


class Ledger:
    """Entries in memory (optionally only the most recent ones) plus a JSONL file.

    Not thread-safe by itself; :class:`SimulatedProvider` serializes access.
    """

    def __init__(self, path: str | os.PathLike[str] | None, max_entries: int | None) -> None:
        self._entries: collections.deque[LedgerEntry] = collections.deque(maxlen=max_entries)
        self._path = Path(path) if path is not None else None
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path | None:
        """The JSONL file entries are appended to, if any."""
        return self._path

    def append(self, entry: LedgerEntry) -> None:
        """Keep ``entry`` and write it to the file as one flushed line."""
        self._entries.append(entry)
        if self._path is not None:
            if self._file is None:
                self._file = _open_private_append(self._path)
            self._file.write(json.dumps(entry._asdict(), ensure_ascii=False) + "\n")
            self._file.flush()

    def entries(self, *, billed_only: bool = False) -> list[LedgerEntry]:
        """A snapshot of the entries in memory, oldest first."""
        if billed_only:
            return [e for e in self._entries if e.billed]
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget the entries in memory; the file is left as written."""
        self._entries.clear()

    def reconfigure(self, path: str | os.PathLike[str] | None, max_entries: int | None) -> None:
        """Switch file and/or memory bound, keeping the most recent entries."""
        new_path = Path(path) if path is not None else None
        if new_path != self._path:
            self.close()
            self._path = new_path
        if max_entries != self._entries.maxlen:
            self._entries = collections.deque(self._entries, maxlen=max_entries)

    def close(self) -> None:
        """Close the file; the next append reopens it."""
        if self._file is not None:
            self._file.close()
            self._file = None
