"""One run at a time calls the provider for a DuckDB database: a file lock beside its journal.

Two runs planning overlapping sets at once would both pay for the shared numbers, and
two runs calling at once would each use the account's whole QPS. Holding this lock
from planning to the last answer makes concurrent runs take turns; each plans after
the previous one recorded its answers, so it pays only for what is still missing.

Taking the turn creates the journal directory (``0700``) or checks that it is trusted
(:func:`~mobile_status_dagster.core.files.private_directory`), before a run plans or
folds anything from it; the lock file is created ``0600`` and never followed through a
symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from mobile_status_dagster.core.files import FILE_MODE, private_directory

log = logging.getLogger("mobile_status_dagster.core.engine")

LOCK_NAME = "provider.lock"
_POLL_S = 0.25


@contextlib.asynccontextmanager
async def provider_turn(journal_dir: Path) -> AsyncIterator[None]:
    """Wait until no other process is calling the provider for this database.

    Raises:
        UntrustedFileError: the journal directory is another user's, or others may
            write it (the message names it and says what to do).
    """
    private_directory(journal_dir)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(journal_dir / LOCK_NAME, flags, FILE_MODE)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("another run is calling the provider for this database; waiting")
                    waited = True
                await asyncio.sleep(_POLL_S)
        yield
    finally:
        os.close(fd)
