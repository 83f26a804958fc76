"""The token is a secret and numbers are personal data: look for them everywhere we write.

Two end-to-end sweeps:

- the whole demo (``mobile-status demo`` as a subprocess), scanned for the demo token;
- an in-process enrichment with a known, non-demo token against a persistent Dagster
  instance (``DAGSTER_HOME`` in a temporary directory), every logger at DEBUG, and a
  fault mix: HTTP 500s, timeouts, malformed bodies, 5001s, the token revoked mid-run
  (4001) in header and in query placement. Then everything the project wrote is
  scanned: log records, stdout/stderr, every file under ``DAGSTER_HOME`` (SQLite
  databases as raw bytes and row by row, compressed blobs inflated), materialization
  metadata, every DuckDB table cast to text, the journal directory, exported files and
  exception texts. The token must be nowhere, and log messages must show numbers masked.

The plain-http warning for non-loopback hosts is covered in ``tests/test_client.py``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import socket
import sqlite3
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli import main as cli_main
from mobile_status_dagster.cli.demo import sample_sets
from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.engine import journal_dir_for
from mobile_status_dagster.core.numbers import normalize
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.integration.resources import LiteralTokenWarning, MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from tests.support import (
    DemoRun,
    make_dagster_home,
    revoke_token_after,
    sample_numbers,
    seed_sets,
)

KNOWN_TOKEN = "Q7ZK2M9X4W8P1R6T3V5Y0B2N4D6F8H0J"
"""The account token of the in-process sweep: 32 characters, not the public demo token."""
ELEVEN_DIGITS = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
MASKED = re.compile(r"1[3-9][0-9]\*{4}[0-9]{4}")
LOGGERS = (
    "",
    "httpx",
    "httpcore",
    "aiohttp",
    "aiohttp.client",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.access",
    "asyncio",
    "dagster",
    "mobile_status_dagster",
)
FAULTS: dict[str, Any] = {
    "http_500_rate": 0.08,
    "malformed_rate": 0.05,
    "operator_refused_rate": 0.05,
    "slow_rate": 0.05,
    "slow_ms": 800,
}
HEALTHY: dict[str, Any] = {
    "http_500_rate": 0.0,
    "malformed_rate": 0.0,
    "operator_refused_rate": 0.0,
    "slow_rate": 0.0,
    "token": KNOWN_TOKEN,
}


# --- finding a secret --------------------------------------------------------------------


def secret_forms(token: str) -> list[bytes]:
    """The token as text, URL-quoted, base64-encoded, and in either case."""
    forms = {token, token.lower(), token.upper(), quote(token, safe="")}
    forms.add(base64.b64encode(token.encode()).decode())
    return sorted({f.encode() for f in forms})


def leaks(data: bytes, token: str) -> bool:
    """Whether ``data`` holds ``token`` in any of :func:`secret_forms`, or inflated."""
    forms = secret_forms(token)
    if any(form in data for form in forms):
        return True
    for wbits in (zlib.MAX_WBITS, 16 + zlib.MAX_WBITS):  # zlib and gzip streams
        with contextlib.suppress(zlib.error):
            if any(form in zlib.decompress(data, wbits) for form in forms):
                return True
    return False


def sqlite_values(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every value of every table of a SQLite database, as bytes."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        yield table, value
                    elif value is not None:
                        yield table, str(value).encode()
    finally:
        conn.close()


def duckdb_texts(path: Path) -> Iterator[tuple[str, str]]:
    """Every row of every table of a DuckDB file, each column cast to text."""
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = conn.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT CAST(COLUMNS(*) AS VARCHAR) FROM "{schema}"."{table}"')
            for row in rows.fetchall():
                yield table, "\x1f".join("" if v is None else str(v) for v in row)


def parquet_text(path: Path) -> str:
    with duckdb.connect() as conn:
        rows = conn.execute(
            "SELECT CAST(COLUMNS(*) AS VARCHAR) FROM read_parquet(?)", [str(path)]
        ).fetchall()
    return "\n".join("\x1f".join("" if v is None else str(v) for v in row) for row in rows)


def leaking_places(root: Path, token: str) -> list[str]:
    """Where under ``root`` the token appears: files, SQLite rows, DuckDB rows, Parquet."""
    found: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert files, f"nothing to scan under {root}"
    for path in files:
        data = path.read_bytes()
        if leaks(data, token):
            found.append(str(path))
        if data.startswith(b"SQLite format 3\x00"):
            found += [f"{path}:{t}" for t, value in sqlite_values(path) if leaks(value, token)]
        elif path.suffix == ".duckdb":
            found += [
                f"{path}:{t}" for t, text in duckdb_texts(path) if leaks(text.encode(), token)
            ]
        elif path.suffix == ".parquet" and leaks(parquet_text(path).encode(), token):
            found.append(f"{path} (parquet rows)")
    return found


def full_numbers(texts: Iterable[str], numbers: set[str]) -> list[str]:
    """Lines of ``texts`` showing one of ``numbers`` unmasked."""
    return [
        line
        for text in texts
        for line in text.splitlines()
        if any(m in numbers for m in ELEVEN_DIGITS.findall(line))
    ]


# --- the demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_writes_the_token_nowhere_and_logs_no_full_number(demo_run: DemoRun) -> None:
    directory, result = demo_run.directory, demo_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert not leaks(result.stdout.encode(), DEMO_TOKEN)
    assert not leaks(result.stderr.encode(), DEMO_TOKEN)
    dagster_home = directory / "dagster_home"
    assert list(dagster_home.glob("history/runs/*.db")), "the demo's runs were not stored"
    assert (directory / "mobile_status.duckdb").is_file()
    assert leaking_places(directory, DEMO_TOKEN) == []

    numbers = {
        n.mobile
        for rows in sample_sets().values()
        for n in map(normalize, rows)
        if n.mobile is not None
    }
    assert len(numbers) > 1000
    out = result.stdout
    err = result.stderr
    logs = [err, *(p.read_text(errors="replace") for p in dagster_home.rglob("compute_logs/*"))]
    assert full_numbers([out, *logs], numbers) == []


# --- the in-process sweep --------------------------------------------------------------------


class Recorder(logging.Handler):
    """Keeps every record, formatted with its traceback as a handler would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def debug_logs() -> Iterator[Recorder]:
    """Every logger at DEBUG, every record kept."""
    recorder = Recorder()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    root.addHandler(recorder)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A persistent Dagster instance (SQLite run and event storage) in a temporary home."""
    home = make_dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@dataclass
class Sweep:
    """Everything one sweep produced that is not a file."""

    runs: list[RunOutcome] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def enrich(
    sweep: Sweep,
    instance: dg.DagsterInstance,
    db: Path,
    set_ids: Sequence[str],
    **api: Any,
) -> RunOutcome:
    """One Dagster run with the token read from the environment, as deployed."""
    resource = MobileStatusResource(
        base_url=dg.EnvVar(settings.BASE_URL),
        token=dg.EnvVar(settings.TOKEN),
        unit_price="0.05",
        max_retries=2,
        **api,
    )
    (run,) = materialize_sets(
        build_mobile_status_assets(),
        resources={"mobile_status_api": resource, "duckdb": DuckDBResource(database=str(db))},
        instance=instance,
        set_ids=set_ids,
        log_level="DEBUG",
    )
    sweep.runs.append(run)
    return run


def event_log_texts(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> list[str]:
    """Every stored event of the runs, their error texts, and their materializations."""
    texts = []
    for run_id in run_ids:
        dagster_run = instance.get_run_by_id(run_id)
        texts.append(repr(dagster_run))
        for entry in instance.all_logs(run_id):
            texts.append(repr(entry))
            event = entry.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            if error is not None:
                texts.append(error.to_string())
    key = dg.AssetKey("mobile_status")
    records = instance.fetch_materializations(key, limit=1000).records
    texts += [repr(r.asset_materialization) for r in records]
    assert records, "no materialization was stored"
    return texts


@pytest.mark.slow
def test_the_token_is_nowhere_and_numbers_are_masked_after_runs_with_faults(
    tmp_path: Path,
    dagster_home: Path,
    debug_logs: Recorder,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "data" / "numbers.duckdb"
    db.parent.mkdir()
    mobiles = sample_numbers(240, seed=17)
    sets = {"a": mobiles[:80], "b": mobiles[80:160], "c": mobiles[160:]}
    seed_sets(db, {k: [*v, "abc", "010-12345678"] for k, v in sets.items()})
    ledger = tmp_path / "simulator-ledger.jsonl"
    config = SimulatorConfig(latency_ms=2, token=KNOWN_TOKEN, ledger_path=ledger, **FAULTS)
    monkeypatch.setenv(settings.TOKEN, KNOWN_TOKEN)
    sweep = Sweep()
    instance = dg.DagsterInstance.get()
    try:
        with SimulatorServer(config) as sim:
            monkeypatch.setenv(settings.BASE_URL, sim.base_url)
            # Faults in header placement; then the token revoked mid-run (4001).
            enrich(sweep, instance, db, ["a"], timeout_s=0.3)
            with revoke_token_after(sim, 30):
                revoked = enrich(sweep, instance, db, ["b"], timeout_s=0.3)
            assert not revoked.success
            assert revoked.message is not None
            assert "4001" in revoked.message
            # The same in query placement: the token travels in the URL.
            sim.provider.update_config(token=KNOWN_TOKEN)
            enrich(sweep, instance, db, ["c"], timeout_s=0.3, token_placement="query")
            with revoke_token_after(sim, 10):
                revoked = enrich(sweep, instance, db, ["b"], token_placement="query")
            assert not revoked.success
            assert revoked.message is not None
            assert "4001" in revoked.message
            # A healthy provider: everything completes, in both placements.
            sim.provider.update_config(**HEALTHY)
            assert enrich(sweep, instance, db, ["a", "b", "c"], token_placement="query").success
            assert enrich(sweep, instance, db, ["a", "b", "c"]).success
            faults = {e.fault for e in sim.provider.ledger()}
            codes = {e.code for e in sim.provider.ledger()}
            assert {"http_500", "malformed", "slow", "operator_refused"} <= faults
            assert 4001 in codes

        exports = tmp_path / "exports"
        exports.mkdir()
        for target in (exports / "online.csv", exports / "online.parquet"):
            assert cli_main(["export", "--db", str(db), "--set", "a", "--out", str(target)]) == 0
        assert cli_main(["report", "--db", str(db)]) == 0
        sweep.texts += event_log_texts(instance, [r.run_id for r in sweep.runs])
    finally:
        instance.dispose()
    out, err = capfd.readouterr()
    sweep.texts += [out, err]
    sweep.texts += [repr(r.metadata) for r in sweep.runs]
    sweep.texts += [r.message for r in sweep.runs if r.message is not None]

    # Faults happened and were recorded: the sweep covers the failure paths.
    assert any(not r.success for r in sweep.runs)
    possibly = duckdb_rows(db, "SELECT count(*) FROM provider_calls WHERE possibly_billed")
    assert possibly[0][0] > 0
    assert any("attempt 1 failed" in r.getMessage() for r in debug_logs.records)

    # The token: nowhere.
    texts = [*debug_logs.texts, *sweep.texts]
    assert [t[:300] for t in texts if leaks(t.encode(), KNOWN_TOKEN)] == []
    assert leaking_places(dagster_home, KNOWN_TOKEN) == []
    assert list(dagster_home.glob("history/runs/*.db")), "the runs were not stored"
    assert leaking_places(db.parent, KNOWN_TOKEN) == []  # DuckDB tables, the journal
    assert leaking_places(exports, KNOWN_TOKEN) == []
    assert not leaks(ledger.read_bytes(), KNOWN_TOKEN)
    journal = journal_dir_for(str(db))
    assert journal.is_dir()
    assert sorted(journal.glob("*.jsonl")) == []  # every answer folded

    # Numbers: masked in every log record and in Dagster's log output.
    numbers = set(mobiles)
    compute_logs = [p.read_text(errors="replace") for p in dagster_home.rglob("compute_logs/*")]
    assert full_numbers([*debug_logs.texts, err, *compute_logs], numbers) == []
    messages = [r.getMessage() for r in debug_logs.records]
    assert any(MASKED.search(m) for m in messages), "no masked number was logged"
    assert "DEBUG" in err  # Dagster's own log was captured at DEBUG


def duckdb_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_a_token_given_as_a_plain_string_warns_that_dagster_stores_it(
    tmp_path: Path, dagster_home: Path
) -> None:
    """Dagster keeps resource config in run storage; only ``EnvVar`` keeps the value out.

    A literal token cannot be hidden from Dagster, so the resource says so when it is
    defined, and not again when Dagster rebuilds it at run time.
    """
    db = tmp_path / "numbers.duckdb"
    seed_sets(db, {"a": sample_numbers(5)})
    instance = dg.DagsterInstance.get()
    try:
        with SimulatorServer(SimulatorConfig(latency_ms=0, token=KNOWN_TOKEN)) as sim:
            with pytest.warns(LiteralTokenWarning, match="EnvVar"):
                resource = MobileStatusResource(base_url=sim.base_url, token=KNOWN_TOKEN)
            with warnings.catch_warnings():
                warnings.simplefilter("error", LiteralTokenWarning)
                (run,) = materialize_sets(
                    build_mobile_status_assets(),
                    resources={
                        "mobile_status_api": resource,
                        "duckdb": DuckDBResource(database=str(db)),
                    },
                    instance=instance,
                    set_ids=["a"],
                    log_level="CRITICAL",
                )
            assert run.success, run.message
    finally:
        instance.dispose()
    # The warning is true: this is the leak an EnvVar avoids (the sweep above proves it).
    assert leaking_places(dagster_home, KNOWN_TOKEN) != []


def test_the_scanner_finds_a_token_hidden_in_sqlite_and_compressed_blobs(tmp_path: Path) -> None:
    """The sweep's scanner itself: a leak it cannot see would prove nothing."""
    path = tmp_path / "store.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE snapshots (body BLOB)")
        conn.execute("INSERT INTO snapshots VALUES (?)", [zlib.compress(b"harmless")])
        conn.commit()
    assert leaking_places(tmp_path, KNOWN_TOKEN) == []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        blob = zlib.compress(f'{{"default": "{KNOWN_TOKEN}"}}'.encode())
        conn.execute("INSERT INTO snapshots VALUES (?)", [blob])
        conn.commit()
    assert leaking_places(tmp_path, KNOWN_TOKEN) == [f"{path}:snapshots"]
    assert leaks(quote(KNOWN_TOKEN.lower()).encode(), KNOWN_TOKEN)
    assert leaks(base64.b64encode(KNOWN_TOKEN.encode()), KNOWN_TOKEN)
    assert full_numbers(["call 13912345678 failed", "139****5678"], {"13912345678"}) == [
        "call 13912345678 failed"
    ]


# --- the simulator stays on loopback ---------------------------------------------------------


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: picks a route, sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104


def test_the_simulator_listens_on_loopback_only_by_default() -> None:
    with SimulatorServer() as sim:
        assert sim.base_url == f"http://127.0.0.1:{sim.port}"
        with socket.create_connection(("127.0.0.1", sim.port), timeout=2):
            pass
        address = _non_loopback_address()
        if address is not None:
            with pytest.raises((ConnectionRefusedError, TimeoutError)):
                socket.create_connection((address, sim.port), timeout=2).close()
