"""Files that hold phone numbers: private modes, trusted directories, literal paths.

Phone numbers are personal data, so every file the library writes that holds them —
the DuckDB file and its WAL, the run's plan spool, the answer journal, exports — is
created readable by its owner only, whatever the process umask (022 is usual), and
nothing in the journal directory is trusted unless the current user could be the
only one to have put it there. Modes are set explicitly when the library creates a
file itself; for the files DuckDB creates (the database, its WAL and spill files) a
private umask is held while the library's connection is open (see
:func:`private_umask`: DuckDB has no mode setting, creates the WAL lazily at the first
write and deletes and re-creates it at every checkpoint, and refuses an empty
pre-created database file).

:data:`FILE_MODE` is the one place the mode is chosen (:data:`DIR_MODE` follows it). A
deployment whose group must read the files (a shared service group) would set it to
``0o640`` (directories ``0o750``); group or other *write* access is never given and
never trusted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from mobile_status_dagster.core.errors import UntrustedFileError

FILE_MODE = 0o600
"""Mode of every file the library creates that holds numbers (owner read/write only).

The one setting: ``0o640`` would let the file's group read them too. Group or other
*write* access is never given, and never trusted in what the library reads back."""
DIR_MODE = FILE_MODE | (FILE_MODE & 0o444) >> 2
"""Mode of the directories the library creates for such files (the answer journal):
:data:`FILE_MODE` plus search (``x``) wherever it grants read — ``0o700`` by default."""
UNTRUSTED_BITS = stat.S_IWGRP | stat.S_IWOTH
"""Write access for group or others: a directory or file with it may hold planted data."""
GLOB_CHARACTERS = frozenset("*?[")
"""What DuckDB's file readers (``read_csv``, ``read_parquet``, ``read_json``,
``read_text``) expand in a path."""


def _umask() -> int:
    """The umask that creates files no more open than :data:`FILE_MODE` and directories
    no more open than :data:`DIR_MODE` (``077`` by default; never the owner's bits)."""
    return 0o777 & ~DIR_MODE


_umask_lock = threading.Lock()
_umask_holders = 0
_umask_saved = 0


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Hold a private umask (``077`` by default) while the body runs.

    For the files DuckDB creates itself, which take ``0666 & ~umask``: the database
    file at connect, its WAL at the first write and again after each checkpoint, its
    spill directory. The umask is the process's, so while any holder is inside, files
    other threads create are private too (stricter, never looser); nested and
    concurrent holders share it and the last one out restores the previous umask.
    The previous umask's bits are kept: this only ever adds restrictions.
    """
    global _umask_holders, _umask_saved
    with _umask_lock:
        if _umask_holders == 0:
            _umask_saved = os.umask(_umask())
            os.umask(_umask_saved | _umask())
        _umask_holders += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_holders -= 1
            if _umask_holders == 0:
                os.umask(_umask_saved)


def private_directory(path: Path) -> Path:
    """Create ``path`` with :data:`DIR_MODE`, or check that the existing one is trusted.

    Trusted, as OpenSSH requires of ``~/.ssh``: a directory owned by the current user
    that neither group nor others may write, so nobody else can have planted a file in
    it. An existing trusted directory with more than :data:`DIR_MODE` (``0755``, as
    older versions left the journal) is tightened to it. Missing parents are created
    with the process's umask (they are not the library's).

    Raises:
        UntrustedFileError: ``path`` is not a directory, is owned by another user, or is
            writable by group or others; the message names it and says what to do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)  # exactly, whatever the umask took away
        return path
    info = os.stat(path)
    problem = directory_problem(info)
    if problem is not None:
        raise UntrustedFileError(f"refusing the journal directory {path}: {problem}")
    if stat.S_IMODE(info.st_mode) & ~DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def directory_problem(info: os.stat_result) -> str | None:
    """Why a directory with ``info`` (``os.stat``) cannot be trusted, or ``None``."""
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory; move it away"
    if info.st_uid != os.geteuid():
        return (
            f"it is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()}), so "
            "its files may have been planted by someone else; check its contents, then "
            "remove it or chown it to this user"
        )
    if info.st_mode & UNTRUSTED_BITS:
        mode = stat.S_IMODE(info.st_mode)
        return (
            f"it is writable by group or others (mode {mode:04o}), so its files may have "
            f"been planted by someone else; check its contents, then chmod {DIR_MODE:o} it"
        )
    return None


def file_problem(info: os.stat_result) -> str | None:
    """Why a file with ``info`` (``os.lstat``, or ``os.fstat`` of a descriptor opened
    with ``O_NOFOLLOW``) cannot be trusted as the library's own, or ``None``."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & UNTRUSTED_BITS:
        return f"it is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


@contextlib.contextmanager
def private_output(target: Path) -> Iterator[Path]:
    """A temporary file for the body to write, put in place as ``target`` with
    :data:`FILE_MODE`.

    The temporary file is created ``FILE_MODE`` (``O_EXCL``, a random name, hidden, in
    ``target``'s directory), so its content is never readable by others, not even
    while being written; on success it replaces ``target`` in one rename (an existing
    file or symlink at ``target`` is replaced, never written through), on failure it
    is removed. A writer must write *into* the file, not replace it (DuckDB's
    ``COPY ... TO`` with ``USE_TMP_FILE false``).
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name).absolute()
    try:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def has_glob(path: Path | str) -> bool:
    """Whether DuckDB's readers would take ``path`` as a glob pattern."""
    return any(character in GLOB_CHARACTERS for character in str(path))


def literal_path(path: Path) -> str:
    """``path`` spelled so DuckDB's readers read exactly that file, not a glob's matches.

    DuckDB 2.0's ``read_csv``/``read_parquet``/``read_json``/``read_text`` expand
    ``*``, ``?`` and ``[...]`` in a path and offer no literal mode. The path is made
    absolute (no ``~`` expansion, no ``file_search_path``, no URL scheme) and each glob
    character is written as a one-character class (``[*]``, ``[?]``, ``[[]``), which
    matches only itself. A path without glob characters is passed as it is.

    Raises:
        ValueError: the path holds both a glob character and a backslash: DuckDB's
            pattern matching splits on ``\\``, so such a name cannot be read literally.
    """
    text = str(path.absolute())
    if not has_glob(text):
        return text
    if "\\" in text:
        raise ValueError(
            f"{path}: DuckDB cannot read a path holding both a backslash and one of "
            "* ? [ literally; rename it"
        )
    return "".join(f"[{c}]" if c in GLOB_CHARACTERS else c for c in text)
