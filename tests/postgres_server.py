"""A throwaway PostgreSQL server for tests: initdb in a fresh temporary directory, a free
loopback port, password (SCRAM) authentication over TCP, stopped and removed afterwards.

Debian's server binaries (``/usr/lib/postgresql/15/bin``; ``POSTGRES_BIN`` overrides) refuse to
run as root, so as root (CI) they run as the system user ``postgres`` through ``runuser``.
Anything that keeps a server from starting raises :class:`PostgresUnavailable`, which the
``postgres_server`` fixture turns into a skip, or a failure under ``CI=true``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

PG_BIN = Path(os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"
"""The system user the server runs as when the tests run as root."""
SUPERUSER = "postgres"
DBNAME = "mobile_status_test"
HOST = "127.0.0.1"
COMMAND_TIMEOUT_S = 60
START_ATTEMPTS = 3
"""A free port is picked by binding and closing; another process may take it before the
server binds it, so a failed start is retried on a new port."""
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    # Durability is no concern for a server that lives as long as a test session.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}


class PostgresUnavailable(RuntimeError):
    """No server can be started here; the message says why."""


@dataclasses.dataclass(frozen=True)
class PostgresServerInfo:
    """Where a running test server answers, and as whom to connect."""

    host: str
    port: int
    user: str
    password: str = dataclasses.field(repr=False)
    dbname: str

    @property
    def url(self) -> str:
        """``postgresql://user:password@host:port/dbname``."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"

    def with_dbname(self, dbname: str) -> PostgresServerInfo:
        """The same server and role, another database."""
        return dataclasses.replace(self, dbname=dbname)

    def connect(self) -> psycopg.Connection[TupleRow]:
        """An autocommit connection to :attr:`dbname`."""
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[PostgresServerInfo]:
        """A new empty database ``test_<uuid hex>``, dropped on exit (failures to drop ignored)."""
        name = f"test_{uuid.uuid4().hex}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield self.with_dbname(name)
        finally:
            with contextlib.suppress(psycopg.Error), self.connect() as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One server: :meth:`start` makes and starts it, :meth:`stop` stops it and removes its
    directory (idempotent; also registered with :mod:`atexit` as a fallback)."""

    def __init__(self, bin_dir: Path = PG_BIN) -> None:
        self.bin_dir = bin_dir
        self.root: Path | None = None
        self.info: PostgresServerInfo | None = None
        self._as_root = os.geteuid() == 0
        self._owner: pwd.struct_passwd | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def start(self) -> PostgresServerInfo:
        """Make a cluster in a new temporary directory, start it, create :data:`DBNAME`."""
        self._check_prerequisites()
        atexit.register(self.stop)
        self.root = Path(tempfile.mkdtemp(prefix="mobile-status-pg-"))
        self.root.chmod(0o700)
        self._give(self.root)
        password = secrets.token_urlsafe(24)
        self._initdb(password)
        last_error = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            try:
                self._pg_ctl_start(port)
            except PostgresUnavailable as exc:
                last_error = str(exc)
                continue
            info = PostgresServerInfo(HOST, port, SUPERUSER, password, "postgres")
            with info.connect() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
            self.info = info.with_dbname(DBNAME)
            return self.info
        raise PostgresUnavailable(last_error)

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``) and remove its directory."""
        root, self.root, self.info = self.root, None, None
        if root is None:
            return
        data_dir = root / "data"
        if (data_dir / "postmaster.pid").exists():
            stopped = self._run(
                ["pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "30"],
                cwd=root,
            )
            if stopped.returncode != 0:
                self._kill_postmaster(data_dir)
        shutil.rmtree(root, ignore_errors=True)

    def _check_prerequisites(self) -> None:
        missing = [
            name
            for name in ("initdb", "pg_ctl", "postgres")
            if not os.access(self.bin_dir / name, os.X_OK)
        ]
        if missing:
            raise PostgresUnavailable(
                f"PostgreSQL server binaries not found in {self.bin_dir}: {', '.join(missing)}"
                " (Debian: apt-get install postgresql-15; POSTGRES_BIN names another directory)"
            )
        if not self._as_root:
            return
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root, and runuser is missing to drop to a user")
        try:
            self._owner = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, and there is no user {RUN_AS!r} to run the server as"
            ) from None

    def _give(self, path: Path) -> None:
        """Hand ``path`` to the user the server runs as (a no-op unless root)."""
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _initdb(self, password: str) -> None:
        assert self.root is not None
        pwfile = self.root / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        self._give(pwfile)
        try:
            self._check(
                "initdb",
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_ctl_start(self, port: int) -> None:
        assert self.root is not None
        settings = {
            **SERVER_SETTINGS,
            "port": str(port),
            "unix_socket_directories": str(self.root),
        }
        # pg_ctl hands -o to a shell.
        options = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items())
        self._check(
            "pg_ctl start",
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "30",
                "-o",
                options,
            ],
        )

    def _kill_postmaster(self, data_dir: Path) -> None:
        """Fallback when pg_ctl cannot stop it: SIGQUIT (immediate shutdown) to the postmaster."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)

    def _check(self, what: str, args: Sequence[str]) -> None:
        assert self.root is not None
        done = self._run(args, cwd=self.root)
        if done.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
            raise PostgresUnavailable(
                f"{what} failed (exit {done.returncode}): {done.stdout}{done.stderr}{log}".strip()
            )

    def _run(self, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        try:
            return subprocess.run(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess(command, 1, "", f"{command[0]}: {exc}")
