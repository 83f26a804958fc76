"""Files on disk: private modes, no trust in planted files, literal paths, safe CSV exports.

Phone numbers are personal data: every file the library writes that holds them (the
DuckDB file and its WAL, the plan spool, the journal, exports) is private to the user
even under the usual umask 022, and nothing another local user could plant in the
journal directory is folded into the audit. Paths are files, never glob patterns.

The suite runs as root, so permission *enforcement* cannot be observed; the tests check
the modes and the ownership checks instead (``os.stat``, ``os.chown`` as root).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mobile_status_dagster.cli.main import EXIT_STATUS
from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.engine import EnrichmentJob, enrich, journal_dir_for
from mobile_status_dagster.core.engine.enrich import EnrichmentReport, recover_journal
from mobile_status_dagster.core.engine.journal import Journal, leftover_segments
from mobile_status_dagster.core.errors import LoadError, StoreError, UntrustedFileError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import Partition, SourceTable, file_connect
from mobile_status_dagster.core.store.file_lock import LOCK_NAME, provider_turn
from mobile_status_dagster.core.store.load import load_file
from mobile_status_dagster.core.store.plan import plan_run
from mobile_status_dagster.core.store.record import fold_segment, iter_spool
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, ensure_schema
from mobile_status_dagster.core.store.summaries import export_set
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import cli_env, query, run_cli, sample_numbers, seed_sets

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
OTHER_UID = 4242
"""A uid that is not the test's (the suite runs as root, which may ``chown`` to it)."""
FAKE_ORDER = "FAKE0RDER0000000000000000000000"
enrich_module = importlib.import_module("mobile_status_dagster.core.engine.enrich")
duckdb_store_module = importlib.import_module("mobile_status_dagster.core.store.duckdb_store")


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """Every test runs under the usual umask 022 (restored afterwards)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """Permission bits of ``path`` (not following a final symlink)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def run_engine(sim: SimulatorServer, db: Path, run_id: str, set_id: str = "s") -> EnrichmentReport:
    """One real enrichment of ``set_id`` through the engine, against ``sim`` and ``db``."""

    async def go() -> EnrichmentReport:
        settings = ClientSettings(base_url=sim.base_url, token=DEMO_TOKEN, max_concurrency=8)
        async with AsyncMobileStatusClient(settings) as client:
            job = EnrichmentJob(
                source=SourceTable(),
                partitions=(Partition(set_id),),
                run_id=run_id,
                unit_price=Decimal("0.05"),
            )
            return await enrich(
                job,
                client=client,
                connect=file_connect(str(db)),
                journal_dir=journal_dir_for(str(db)),
            )

    return asyncio.run(go())


def answer_line(mobile: str, order: str) -> dict[str, Any]:
    """One billed answer in the journal's line format."""
    return {
        "m": mobile,
        "s": "s",
        "why": "new",
        "n": 1,
        "t": int(datetime.now(UTC).timestamp() * 1_000_000),
        "ms": 1.0,
        "h": 200,
        "c": 2000,
        "msg": "ok",
        "o": order,
        "st": 1,
        "op": "CM",
        "b": True,
        "keep": True,
    }


def fake_segment(path: Path, mobile: str = "13912345678", order: str = FAKE_ORDER) -> Path:
    """A journal segment in the library's format with one fake billed answer."""
    header = {"run": "planted", "price": "9.99", "cur": "CNY"}
    lines = [json.dumps(header), json.dumps(answer_line(mobile, order))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def audit_orders(db: Path) -> list[str]:
    return sorted(str(o) for (o,) in query(db, "SELECT order_number FROM provider_calls"))


def fresh_schema(db: Path) -> None:
    with file_connect(str(db))() as conn:
        ensure_schema(conn, DEFAULT_TABLES)


# --- 1. modes ----------------------------------------------------------------------------


def test_the_journal_directory_its_segments_and_the_lock_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "numbers.duckdb.journal"

    async def take_turn() -> None:
        async with provider_turn(directory):
            pass

    asyncio.run(take_turn())
    assert mode(directory) == PRIVATE_DIR
    assert mode(directory / LOCK_NAME) == PRIVATE_FILE
    journal = Journal(directory, "r1", unit_price=Decimal("0.05"), currency="CNY")
    try:
        assert mode(journal.current.path) == PRIVATE_FILE
        assert mode(journal.rotate().path) == PRIVATE_FILE
    finally:
        journal.current.release()


def test_a_journal_directory_left_world_readable_by_an_older_version_is_tightened(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "numbers.duckdb.journal"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - as an older version left it
    journal = Journal(directory, "r1", unit_price=Decimal(0), currency="CNY")
    journal.current.release()
    assert mode(directory) == PRIVATE_DIR


def test_the_plan_spool_is_private_and_leaves_no_temporary_file(db: Path) -> None:
    numbers = sample_numbers(20, seed=41)
    seed_sets(db, {"s": numbers})
    directory = journal_dir_for(str(db))
    directory.mkdir(mode=PRIVATE_DIR)
    spool = directory / "r1-1.plan.parquet"
    with file_connect(str(db))() as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        plan = plan_run(
            conn,
            SourceTable(),
            (Partition("s"),),
            tables=DEFAULT_TABLES,
            freshness=Freshness(),
            now=datetime.now(UTC),
            spool=spool,
        )
    assert plan.to_send == len(numbers)
    assert mode(spool) == PRIVATE_FILE
    assert sorted(m for m, _, _ in iter_spool(spool)) == sorted(numbers)
    assert sorted(p.name for p in directory.iterdir()) == [spool.name]


def test_every_file_of_a_real_run_is_private(
    simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal directory, a segment and the spool while the numbers are sent; the
    database's WAL right after a fold wrote answers into it; the database file."""
    numbers = sample_numbers(30, seed=42)
    fresh_schema(db)  # the library creates the file
    seed_sets(db, {"s": numbers})
    seen: dict[str, int] = {}
    spool_reader = enrich_module.iter_spool
    folder = duckdb_store_module.fold_segment

    def watching_spool(path: Path, batch_size: int = 2048) -> Iterator[tuple[str, str, str]]:
        directory = path.parent
        seen["journal directory"] = mode(directory)
        seen["spool"] = mode(path)
        for name in os.listdir(directory):
            if name.endswith(".jsonl"):
                seen["segment"] = mode(directory / name)
        yield from spool_reader(path, batch_size)

    def watching_fold(conn: duckdb.DuckDBPyConnection, path: Path, **kwargs: Any) -> Any:
        result = folder(conn, path, **kwargs)
        wal = Path(f"{db}.wal")
        if result.attempts and wal.exists():  # the connection is still open
            seen["wal"] = mode(wal)
        return result

    monkeypatch.setattr(enrich_module, "iter_spool", watching_spool)
    monkeypatch.setattr(duckdb_store_module, "fold_segment", watching_fold)
    report = run_engine(simulator, db, "run-1")
    assert report.ok, report.stop_message()
    assert seen == {
        "journal directory": PRIVATE_DIR,
        "spool": PRIVATE_FILE,
        "segment": PRIVATE_FILE,
        "wal": PRIVATE_FILE,
    }
    assert mode(db) == PRIVATE_FILE


def test_the_database_file_and_its_wal_are_created_private(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    wal = Path(f"{db}.wal")
    with file_connect(str(db))() as conn:
        assert mode(db) == PRIVATE_FILE
        conn.execute(
            "CREATE TABLE numbers AS SELECT '1391234567' || range AS mobile FROM range(10)"
        )
        assert wal.exists(), "DuckDB wrote no WAL: the test no longer checks it"
        assert mode(wal) == PRIVATE_FILE
        conn.execute("CHECKPOINT")  # DuckDB deletes the WAL and creates a new one on write
        conn.execute("INSERT INTO numbers VALUES ('13900000000')")
        assert mode(wal) == PRIVATE_FILE
    assert mode(db) == PRIVATE_FILE
    # The umask is the process's own again once no connection is open.
    assert os.umask(0o022) == 0o022


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """A file the user made (and may share on purpose) is not changed, only new ones."""
    db = tmp_path / "shared.duckdb"
    duckdb.connect(str(db)).close()
    os.chmod(db, 0o640)
    with file_connect(str(db))() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert mode(db) == 0o640


def publish_rows(db: Path, rows: list[dict[str, Any]], set_id: str = "s") -> None:
    """Write published rows directly (valid, online unless given)."""
    fresh_schema(db)
    with duckdb.connect(str(db)) as conn:
        for row in rows:
            values = {
                "set_id": set_id,
                "mobile_raw": row["mobile"],
                "valid": True,
                "status_code": int(Status.ONLINE),
                "status": Status.ONLINE.label,
                "operator": "CM",
                "prefix_operator": "CM",
                "ported": False,
                "order_number": "O1",
                "checked_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                "source": "test",
                "run_id": "r1",
            } | row
            columns = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(
                f"INSERT INTO mobile_status ({columns}) VALUES ({marks})", list(values.values())
            )


@pytest.mark.parametrize("name", ["online.csv", "online.parquet"])
def test_exports_are_private_even_over_a_world_readable_file(
    tmp_path: Path, db: Path, name: str
) -> None:
    publish_rows(db, [{"mobile": "13912345678"}, {"mobile": "13912345679"}])
    exports = tmp_path / "exports"
    exports.mkdir()
    out = exports / name
    out.write_text("old export\n", encoding="utf-8")
    os.chmod(out, 0o644)
    with file_connect(str(db))() as conn:
        written = export_set(conn, "s", [Status.ONLINE], out, tables=DEFAULT_TABLES)
    assert written == 2
    assert mode(out) == PRIVATE_FILE
    assert [p.name for p in exports.iterdir()] == [name]  # no temporary file left


# --- 2. planted journal segments ------------------------------------------------------------


def planted_journal(db: Path) -> Path:
    """A journal directory as a run leaves it, for ``db`` (schema created)."""
    fresh_schema(db)
    directory = journal_dir_for(str(db))
    directory.mkdir(mode=PRIVATE_DIR)
    return directory


def test_segments_of_another_owner_symlinked_or_badly_named_are_not_folded(
    db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = planted_journal(db)
    foreign = fake_segment(directory / "planted-4242-000001.jsonl", order=FAKE_ORDER + "A")
    os.chown(foreign, OTHER_UID, OTHER_UID)
    elsewhere = fake_segment(tmp_path / "elsewhere.jsonl", order=FAKE_ORDER + "B")
    (directory / "linked-4242-000001.jsonl").symlink_to(elsewhere)
    fake_segment(directory / "answers.jsonl", order=FAKE_ORDER + "C")
    fake_segment(directory / "planted-4242-1.jsonl", order=FAKE_ORDER + "D")
    # A genuine leftover of a run that died is still recovered.
    genuine = Journal(directory, "died", unit_price=Decimal("0.05"), currency="CNY")
    genuine._write_lines([json.dumps(answer_line("13900000009", "GENUINE"))])
    genuine.current.release()

    with caplog.at_level(logging.WARNING, logger="mobile_status_dagster"):
        recovered = recover_journal(file_connect(str(db)), directory)
    assert recovered == 1
    assert audit_orders(db) == ["GENUINE"]
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("planted-4242-000001.jsonl", "linked-4242-000001.jsonl"):
        assert name in warnings
    # Nothing is deleted: the files are the user's to inspect.
    assert foreign.exists()
    assert (directory / "linked-4242-000001.jsonl").is_symlink()
    assert elsewhere.read_text(encoding="utf-8").count("\n") == 2


@pytest.mark.timeout(60)  # a FIFO once blocked the scan for good
def test_leftover_segments_yields_only_regular_own_files_with_the_library_names(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "j"
    directory.mkdir(mode=PRIVATE_DIR)
    fake_segment(directory / "a-1-000001.jsonl")
    fake_segment(directory / "a-1-000002.jsonl")
    os.chown(directory / "a-1-000002.jsonl", OTHER_UID, OTHER_UID)
    fake_segment(directory / "a-1-000003.jsonl")
    os.chmod(directory / "a-1-000003.jsonl", 0o622)  # noqa: S103 - group and others may write
    (directory / "a-1-000004.jsonl").symlink_to(directory / "a-1-000001.jsonl")
    os.mkfifo(directory / "a-1-000005.jsonl")  # must not block the scan
    fake_segment(directory / "notes.jsonl")
    segments = list(leftover_segments(directory))
    try:
        assert [s.path.name for s in segments] == ["a-1-000001.jsonl"]
    finally:
        for segment in segments:
            segment.release()


@pytest.mark.parametrize("problem", ["group-writable", "world-writable", "other-owner"])
def test_an_untrusted_journal_directory_is_refused_before_anything_is_paid(
    simulator: SimulatorServer, db: Path, problem: str
) -> None:
    seed_sets(db, {"s": sample_numbers(10, seed=43)})
    directory = planted_journal(db)
    fake_segment(directory / "planted-4242-000001.jsonl")
    if problem == "other-owner":
        os.chown(directory, OTHER_UID, OTHER_UID)
    else:
        os.chmod(directory, 0o770 if problem == "group-writable" else 0o707)
    with pytest.raises(StoreError) as raised:
        run_engine(simulator, db, "r1")
    message = str(raised.value)
    assert str(directory) in message
    assert ("owned" if problem == "other-owner" else "chmod") in message
    assert simulator.provider.ledger() == []
    assert audit_orders(db) == []
    assert isinstance(raised.value, UntrustedFileError)


def test_the_command_refuses_a_group_writable_journal_directory_clearly(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"s": sample_numbers(5, seed=44)})
    directory = planted_journal(db)
    fake_segment(directory / "planted-4242-000001.jsonl")
    os.chmod(directory, 0o775)  # noqa: S103 - the case under test
    result = run_cli("enrich", "--set", "s", "--quiet", env=cli_env(simulator, db))
    assert result.returncode == EXIT_STATUS["store"], result.stderr
    assert "Traceback" not in result.stderr
    assert str(directory) in result.stderr
    assert simulator.provider.ledger() == []
    assert audit_orders(db) == []


def test_fold_segment_refuses_a_symlink(db: Path, tmp_path: Path) -> None:
    fresh_schema(db)
    target = fake_segment(tmp_path / "target.jsonl")
    link = tmp_path / "r-1-000001.jsonl"
    link.symlink_to(target)
    with file_connect(str(db))() as conn, pytest.raises(StoreError, match="symbolic link"):
        fold_segment(conn, link, tables=DEFAULT_TABLES)
    assert audit_orders(db) == []


# --- 3. literal paths ----------------------------------------------------------------------


def load(db: Path, path: Path) -> list[str]:
    """Load ``path`` into a fresh set and return the set's numbers."""
    with file_connect(str(db))() as conn:
        load_file(conn, path, set_id="x", replace=True)
    return [str(m) for (m,) in query(db, "SELECT mobile FROM number_sets ORDER BY mobile")]


def test_load_takes_a_file_name_with_glob_characters_literally(tmp_path: Path, db: Path) -> None:
    (tmp_path / "a*.csv").write_text("mobile\n13900000001\n", encoding="utf-8")
    (tmp_path / "a1.csv").write_text("mobile\n13900000002\n", encoding="utf-8")
    (tmp_path / "[x].csv").write_text("mobile\n13900000003\n", encoding="utf-8")
    (tmp_path / "x.csv").write_text("mobile\n13900000004\n", encoding="utf-8")
    (tmp_path / "b?.txt").write_text("13900000005\n", encoding="utf-8")
    (tmp_path / "b1.txt").write_text("13900000006\n", encoding="utf-8")
    with duckdb.connect() as conn:
        for name, mobile in (("c[1].parquet", "13900000007"), ("c1.parquet", "13900000008")):
            target = str(tmp_path / name).replace("'", "''")
            conn.execute(f"COPY (SELECT '{mobile}' AS mobile) TO '{target}' (FORMAT parquet)")
    assert load(db, tmp_path / "a*.csv") == ["13900000001"]
    assert load(db, tmp_path / "a1.csv") == ["13900000002"]
    assert load(db, tmp_path / "[x].csv") == ["13900000003"]
    assert load(db, tmp_path / "b?.txt") == ["13900000005"]
    assert load(db, tmp_path / "c[1].parquet") == ["13900000007"]


def test_load_in_a_directory_with_glob_characters(tmp_path: Path, db: Path) -> None:
    directory = tmp_path / "lists [2026] *"
    directory.mkdir()
    (directory / "a.csv").write_text("mobile\n13900000001\n", encoding="utf-8")
    assert load(db, directory / "a.csv") == ["13900000001"]


@pytest.mark.parametrize("name", ["a*.csv", "nothing*.csv", "[ab].csv", "?.csv"])
def test_load_refuses_a_pattern_that_names_no_file(tmp_path: Path, db: Path, name: str) -> None:
    (tmp_path / "a1.csv").write_text("mobile\n13900000001\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("mobile\n13900000002\n", encoding="utf-8")
    path = tmp_path / name
    with file_connect(str(db))() as conn, pytest.raises(LoadError) as raised:
        load_file(conn, path, set_id="x")
    message = str(raised.value)
    assert str(path) in message
    assert "no such file" in message
    assert "glob" in message


def test_load_refuses_what_is_not_a_regular_file(tmp_path: Path, db: Path) -> None:
    directory = tmp_path / "d.csv"
    directory.mkdir()
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    for path in (directory, fifo):
        with file_connect(str(db))() as conn, pytest.raises(LoadError) as raised:
            load_file(conn, path, set_id="x")
        assert str(path) in str(raised.value)
        assert "not a regular file" in str(raised.value)


def test_the_command_loads_a_glob_named_file_literally(
    tmp_path: Path, db: Path, simulator: SimulatorServer
) -> None:
    (tmp_path / "a*.csv").write_text("mobile\n13900000001\n", encoding="utf-8")
    (tmp_path / "a1.csv").write_text("mobile\n13900000002\n13900000003\n", encoding="utf-8")
    env = cli_env(simulator, db)
    result = run_cli("load", str(tmp_path / "a*.csv"), "--set", "s", env=env)
    assert result.returncode == 0, result.stderr
    assert "loaded 1 row(s)" in result.stdout
    missing = run_cli("load", str(tmp_path / "b*.csv"), "--set", "s", env=env)
    assert missing.returncode == EXIT_STATUS["input"]
    assert "no such file" in missing.stderr


@pytest.mark.parametrize("directory_name", ["journal", "journal [1] *"])
def test_a_segment_whose_name_is_a_glob_folds_only_itself(
    db: Path, tmp_path: Path, directory_name: str
) -> None:
    fresh_schema(db)
    directory = tmp_path / directory_name
    directory.mkdir(mode=PRIVATE_DIR)
    star = fake_segment(directory / "r*-1-000001.jsonl", mobile="13900000001", order="STAR")
    fake_segment(directory / "r1-1-000001.jsonl", mobile="13900000002", order="ONE")
    with file_connect(str(db))() as conn:
        result = fold_segment(conn, star, tables=DEFAULT_TABLES)
    assert (result.attempts, result.answers) == (1, 1)
    assert audit_orders(db) == ["STAR"]


def test_iter_spool_reads_exactly_its_file(tmp_path: Path) -> None:
    with duckdb.connect() as conn:
        for name, mobile in (("s[1].parquet", "13900000001"), ("s1.parquet", "13900000002")):
            target = str(tmp_path / name).replace("'", "''")
            conn.execute(
                f"COPY (SELECT '{mobile}' AS mobile, 's' AS set_id, 'new' AS reason) "
                f"TO '{target}' (FORMAT parquet)"
            )
    assert list(iter_spool(tmp_path / "s[1].parquet")) == [("13900000001", "s", "new")]


def test_a_run_on_a_database_whose_path_has_glob_characters(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    directory = tmp_path / "warehouse [eu] *"
    directory.mkdir()
    db = directory / "numbers[1].duckdb"
    numbers = sample_numbers(12, seed=45)
    seed_sets(db, {"s": numbers})
    report = run_engine(simulator, db, "run*[1]?")
    assert report.ok, report.stop_message()
    answered = query(db, "SELECT count(*) FROM mobile_status WHERE status_code IS NOT NULL")
    assert answered == [(len(numbers),)]
    assert not list(journal_dir_for(str(db)).glob("*.jsonl"))


# --- 4. CSV exports: formula injection ------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_csv_exports_neutralise_formulas_in_every_text_column(tmp_path: Path, db: Path) -> None:
    rows = [
        {"mobile": f"1391234567{i}", "operator": value, "prefix_operator": value, "status": value}
        for i, value in enumerate(HOSTILE)
    ]
    rows.append({"mobile": "13912345679"})  # an ordinary row is unchanged
    publish_rows(db, rows)
    out = tmp_path / "online.csv"
    parquet = tmp_path / "online.parquet"
    with file_connect(str(db))() as conn:
        assert export_set(conn, "s", [Status.ONLINE], out, tables=DEFAULT_TABLES) == len(rows)
        assert export_set(conn, "s", [Status.ONLINE], parquet, tables=DEFAULT_TABLES) == len(rows)
    with duckdb.connect() as conn:
        exported = conn.execute(
            "SELECT mobile, status, operator, prefix_operator, ported FROM "
            "read_csv(?, header = true, all_varchar = true) ORDER BY mobile",
            [str(out)],
        ).fetchall()
        raw = conn.execute(
            "SELECT operator FROM read_parquet(?) ORDER BY mobile", [str(parquet)]
        ).fetchall()
    expected = [(f"1391234567{i}", *(["'" + v] * 3), "false") for i, v in enumerate(HOSTILE)]
    expected.append(("13912345679", "online", "CM", "CM", "false"))
    assert exported == expected
    # Parquet is for programs, not spreadsheets: values exactly as stored.
    assert [r[0] for r in raw] == [*HOSTILE, "CM"]


def test_a_killed_runs_plan_spool_is_removed_by_the_next_run(
    simulator: SimulatorServer, db: Path
) -> None:
    """The spool lists every number to send: a SIGKILLed run's copy must not stay behind."""
    seed_sets(db, {"s": sample_numbers(5, seed=71)})
    journal = journal_dir_for(str(db))
    journal.mkdir(mode=0o700)
    dead = journal / "dead-run-99999.plan.parquet"
    dead.write_bytes(b"numbers of a killed run")
    half_written = journal / ".dead-run-99999.plan.parquet.abc123.tmp"
    half_written.write_bytes(b"half")
    report = run_engine(simulator, db, "r-next")
    assert report.ok
    assert not dead.exists()
    assert not half_written.exists()


def test_a_lone_surrogate_from_outside_the_client_cannot_lose_a_paid_answer(
    tmp_path: Path,
) -> None:
    """The journal writes what cannot be encoded as U+FFFD instead of raising."""
    journal = Journal(tmp_path / "j", "r1", unit_price=Decimal("0.05"), currency="CNY")
    journal._write_lines(['{"m":"13912345678","s":"set\udc80"}'])
    text = journal.current.path.read_text(encoding="utf-8")
    assert "set?" in text or "set\ufffd" in text


def test_a_planted_directory_is_an_untrusted_file_error_of_the_store_category() -> None:
    """Refusing planted data is a store failure (exit 4), with its own class."""
    assert issubclass(UntrustedFileError, StoreError)
    assert UntrustedFileError.category == "store"


# --- 5. the simulator's ledger --------------------------------------------------------------


def test_the_simulator_ledger_is_private_and_never_written_through_a_link(
    tmp_path: Path,
) -> None:
    from mobile_status_dagster.simulator.ledger import Ledger, LedgerEntry

    entry = LedgerEntry(1, 0.0, "13912345678", True, 200, 0, 1, "CM", "o1", True, None)
    ledger = Ledger(tmp_path / "ledger.jsonl", None)
    ledger.append(entry)
    ledger.close()
    assert mode(tmp_path / "ledger.jsonl") == PRIVATE_FILE

    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n", encoding="utf-8")
    (tmp_path / "linked.jsonl").symlink_to(victim)
    linked = Ledger(tmp_path / "linked.jsonl", None)
    with pytest.raises(OSError, match=r"linked\.jsonl"):
        linked.append(entry)
    assert victim.read_text(encoding="utf-8") == "keep\n"
