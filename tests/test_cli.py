"""The ``mobile-status`` command, run as a user runs it: a subprocess against the simulator."""

from __future__ import annotations

import re
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from mobile_status_dagster.cli.main import EXIT_OK, EXIT_STATUS
from mobile_status_dagster.core.errors import ErrorCategory
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, ensure_schema
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import (
    COMMAND,
    PRICE,
    DemoRun,
    asked,
    base_env,
    cli_env,
    query,
    requests_since,
    run_cli,
    sample_numbers,
    seed_sets,
    truth,
)

run = run_cli


@pytest.fixture
def env(simulator: SimulatorServer, db: Path) -> dict[str, str]:
    """Settings pointing the command at the test simulator and DuckDB file."""
    return cli_env(simulator, db)


def source_rows(db: Path) -> list[tuple[str, str | None]]:
    """``(set_id, mobile)`` of ``number_sets``, sorted (empty when there is no table)."""
    if not db.exists():
        return []
    tables = {t for (t,) in query(db, "SELECT table_name FROM duckdb_tables()")}
    if "number_sets" not in tables:
        return []
    return [
        (str(s), m) for s, m in query(db, "SELECT set_id, mobile FROM number_sets ORDER BY ALL")
    ]


def assert_clean_error(
    result: subprocess.CompletedProcess[str], *texts: str, status: ErrorCategory = "input"
) -> str:
    """Exit ``EXIT_STATUS[status]`` with one ``error:`` line on stderr (no traceback)."""
    assert result.returncode == EXIT_STATUS[status], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: ")
    for text in texts:
        assert text in line
    return line


def test_command_exists() -> None:
    assert COMMAND.exists(), f"{COMMAND} is not installed (pip install -e .)"


def test_module_help_lists_the_commands() -> None:
    result = run("--help", env=base_env(), module=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mobile-status")
    for command in ("simulator", "load", "enrich", "demo"):
        assert command in result.stdout


# --- load ------------------------------------------------------------------------------


def test_load_csv_uses_the_mobile_column(tmp_path: Path, db: Path, env: dict[str, str]) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "name,Mobile,city\nZhang,13912345678,Beijing\nLi,+86 186-1234-5678,Shanghai\nWang,abc,x\n",
        encoding="utf-8",
    )
    result = run("load", str(path), "--set", "leads", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "loaded 3 row(s) into set 'leads': 2 valid, 1 rejected (not_digits 1)"
    )
    assert source_rows(db) == sorted(
        [("leads", "13912345678"), ("leads", "+86 186-1234-5678"), ("leads", "abc")]
    )


def test_load_csv_column_option_and_first_column_default(
    tmp_path: Path, db: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,alt\n13912345678,18612345678\n13912345679,\n", encoding="utf-8")
    first = run("load", str(path), "--set", "first", env=env)
    assert first.returncode == 0, first.stderr
    chosen = run("load", str(path), "--set", "alt", "--column", "alt", env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert "loaded 2 row(s) into set 'alt': 1 valid, 1 rejected (empty 1)" in chosen.stdout
    assert sorted(source_rows(db), key=str) == sorted(
        [("first", "13912345678"), ("first", "13912345679"), ("alt", "18612345678"), ("alt", None)],
        key=str,
    )


def test_load_text_file(tmp_path: Path, db: Path, env: dict[str, str]) -> None:
    path = tmp_path / "numbers.txt"
    path.write_bytes(b"13912345678\r\n\r\n+86 139 1234 5679\n0086-139-1234-5670\n12345")
    result = run("load", str(path), "--set", "t", env=env)
    assert result.returncode == 0, result.stderr
    assert "loaded 4 row(s) into set 't': 3 valid, 1 rejected" in result.stdout
    assert source_rows(db) == sorted(
        [
            ("t", "13912345678"),
            ("t", "+86 139 1234 5679"),
            ("t", "0086-139-1234-5670"),
            ("t", "12345"),
        ]
    )


def test_load_parquet_with_numeric_numbers(tmp_path: Path, db: Path, env: dict[str, str]) -> None:
    path = tmp_path / "export.parquet"
    with duckdb.connect() as conn:
        conn.execute(
            "COPY (SELECT * FROM (VALUES (1, 13912345678::BIGINT), (2, 18612345678::BIGINT)) "
            f"t(id, mobile)) TO '{path}' (FORMAT parquet)"
        )
    result = run("load", str(path), "--set", "pq", env=env)
    assert result.returncode == 0, result.stderr
    assert "loaded 2 row(s) into set 'pq': 2 valid, 0 rejected" in result.stdout
    assert source_rows(db) == [("pq", "13912345678"), ("pq", "18612345678")]


def test_load_appends_unless_replace(tmp_path: Path, db: Path, env: dict[str, str]) -> None:
    seed_sets(db, {"other": ["13800000000"]})
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("mobile\n13912345678\n13912345679\n", encoding="utf-8")
    second.write_text("mobile\n18612345678\n", encoding="utf-8")
    assert run("load", str(first), "--set", "s", env=env).returncode == 0
    assert run("load", str(second), "--set", "s", env=env).returncode == 0
    assert [m for s, m in source_rows(db) if s == "s"] == [
        "13912345678",
        "13912345679",
        "18612345678",
    ]
    replaced = run("load", str(second), "--set", "s", "--replace", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert source_rows(db) == [("other", "13800000000"), ("s", "18612345678")]


def _gbk_csv() -> bytes:
    return "mobile,name\n13912345678,张三\n13912345679,李四\n".encode("gbk")


def _late_bad_row() -> bytes:
    good = b"".join(b"139%08d\n" % i for i in range(30_000))
    return b"mobile\n" + good + "张三\n".encode("gbk") + b"13800000000\n"


BAD_FILES: list[tuple[str, str, bytes | None, tuple[str, ...], str]] = [
    # (case, file name, content (None: no file), extra arguments, expected text)
    ("missing-column", "ok.csv", b"mobile\n13912345678\n", ("--column", "phone"), "'phone'"),
    ("gbk-csv", "gbk.csv", _gbk_csv(), (), "not a readable CSV file"),
    ("gbk-text", "gbk.txt", "13912345678\n张三\n".encode("gbk"), (), "UTF-8"),
    ("late-bad-row", "late.csv", _late_bad_row(), (), "not a readable CSV file"),
    ("empty", "empty.csv", b"", (), "empty"),
    ("header-only", "header.csv", b"mobile\n", (), "no rows"),
    ("garbage-csv", "garbage.csv", bytes(range(256)) * 4, (), "not a readable CSV file"),
    ("garbage-parquet", "garbage.parquet", bytes(range(256)) * 4, (), "Parquet"),
    ("unknown-extension", "numbers.xlsx", b"PK\x03\x04", (), "unsupported file type .xlsx"),
    ("missing-file", "nowhere.csv", None, (), "no such file"),
]


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_load_refuses_bad_files_cleanly(
    tmp_path: Path,
    db: Path,
    env: dict[str, str],
    name: str,
    content: bytes | None,
    extra: tuple[str, ...],
    expected: str,
) -> None:
    seed_sets(db, {"target": ["13912345670"], "other": ["13800000000"]})
    before = source_rows(db)
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run("load", str(path), "--set", "target", *extra, env=env)
    assert_clean_error(result, str(path), expected)
    assert result.stdout == ""
    assert source_rows(db) == before  # nothing half-written


def test_load_non_utf8_csv_says_it_is_not_utf8(
    tmp_path: Path, db: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes(_gbk_csv())
    result = run("load", str(path), "--set", "s", env=env)
    assert_clean_error(result, str(path), "UTF-8")


@pytest.mark.parametrize("problem", ["missing-directory", "not-a-database"])
def test_load_into_an_unusable_database_fails_cleanly(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    database = tmp_path / "nowhere" / "x.duckdb"
    if problem == "not-a-database":
        database = tmp_path / "notes.duckdb"
        database.write_text("these are my notes\n", encoding="utf-8")
    path = tmp_path / "ok.csv"
    path.write_text("mobile\n13912345678\n", encoding="utf-8")
    result = run("load", str(path), "--set", "s", env=env | {settings.DB: str(database)})
    assert_clean_error(result, str(database), status="store")
    if problem == "not-a-database":
        assert database.read_text(encoding="utf-8") == "these are my notes\n"


# --- enrich ----------------------------------------------------------------------------


def _summary_rows(stdout: str) -> dict[str, list[int]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 8 and all(p.isdigit() for p in parts[1:]):
            rows[parts[0]] = [int(p) for p in parts[1:]]
    return rows


def _charges(stdout: str) -> tuple[int, int, str]:
    match = re.search(r"provider calls: (\d+), billed: (\d+), .*cost: ([\d.]+) CNY", stdout)
    assert match, stdout
    return int(match[1]), int(match[2]), match[3]


def test_enrich_sets_end_to_end_prints_the_summary(
    tmp_path: Path, db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    mobiles = sample_numbers(120)
    leads, signups = mobiles[:80], mobiles[60:]
    (tmp_path / "leads.csv").write_text(
        "mobile\n" + "\n".join([*leads, "abc"]) + "\n", encoding="utf-8"
    )
    (tmp_path / "signups.txt").write_text("\n".join(signups) + "\n", encoding="utf-8")
    assert run("load", str(tmp_path / "leads.csv"), "--set", "leads", env=env).returncode == 0
    assert run("load", str(tmp_path / "signups.txt"), "--set", "signups", env=env).returncode == 0

    first = run("enrich", "--set", "leads", "--quiet", env=env)
    assert first.returncode == 0, first.stderr
    billed = simulator.provider.ledger(billed_only=True)
    calls, charged, cost = _charges(first.stdout)
    assert (calls, charged) == (len(simulator.provider.ledger()), len(billed))
    assert cost == f"{Decimal(PRICE) * len(billed):.2f}"
    rows = _summary_rows(first.stdout)
    assert list(rows) == ["leads"]
    statuses = [0] * 6
    for m in leads:
        statuses[truth(m)] += 1
    assert rows["leads"] == [*statuses, 1]  # unknown … cancelled, then invalid
    assert "serving operator:" in first.stdout
    assert query(db, "SELECT count(*) FROM mobile_status WHERE set_id = 'leads'") == [(81,)]

    mark = len(simulator.provider.ledger())
    second = run("enrich", "--all", "--quiet", env=env)
    assert second.returncode == 0, second.stderr
    assert list(_summary_rows(second.stdout)) == ["leads", "signups"]
    new = requests_since(simulator, mark)
    known = {m for m in leads if truth(m) != 0}
    assert asked(new) == sorted(set(mobiles) - known)
    calls, charged, _ = _charges(second.stdout)
    assert (calls, charged) == (len(new), sum(1 for e in new if e.billed))
    assert DEMO_TOKEN not in second.stdout + second.stderr


# One number on every segment of provider-api.md's "Number rules", with its operator;
# the 4th digit 9 takes in 1349 (CM) too, which libphonenumber has no carrier for.
CONTRACT_SEGMENT_NUMBERS: dict[str, str] = {
    f"{segment}91234567": operator
    for operator, segments in (
        (
            "CM",
            "134 135 136 137 138 139 147 150 151 152 157 158 159 172 178 182 183 184 187 188"
            " 195 197 198",
        ),
        ("CU", "130 131 132 145 155 156 166 175 176 185 186 196"),
        ("CT", "133 149 153 173 177 180 181 189 190 191 193 199"),
        ("CBN", "192"),
        ("VNO", "162 165 167 170 171"),
    )
    for segment in segments.split()
}


def test_enrich_publishes_every_contract_segment_with_a_provider_status(
    tmp_path: Path, db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    mobiles = list(CONTRACT_SEGMENT_NUMBERS)
    path = tmp_path / "segments.csv"
    path.write_text("mobile\n" + "\n".join(mobiles) + "\n", encoding="utf-8")
    loaded = run("load", str(path), "--set", "segments", env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == (
        f"loaded {len(mobiles)} row(s) into set 'segments': {len(mobiles)} valid, 0 rejected"
    )

    result = run("enrich", "--set", "segments", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    rows = query(
        db,
        "SELECT mobile, valid, invalid_reason, source, status_code, prefix_operator"
        " FROM mobile_status WHERE set_id = 'segments' ORDER BY mobile",
    )
    assert rows == [
        (m, True, None, "provider", truth(m), CONTRACT_SEGMENT_NUMBERS[m]) for m in sorted(mobiles)
    ]
    assert all(status_code is not None for _, _, _, _, status_code, _ in rows)
    # The contract's operator is also the network operator the ported flag compares with.
    ported = query(
        db, "SELECT mobile, operator, ported FROM mobile_status WHERE set_id = 'segments'"
    )
    for mobile, serving, is_ported in ported:
        if CONTRACT_SEGMENT_NUMBERS[mobile] in ("CM", "CU", "CT"):
            assert is_ported is (serving != CONTRACT_SEGMENT_NUMBERS[mobile]), mobile
    assert sorted(str(entry.mobile) for entry in simulator.provider.ledger()) == sorted(mobiles)


def test_enrich_unknown_set_is_refused(db: Path, env: dict[str, str]) -> None:
    seed_sets(db, {"real": sample_numbers(3)})
    result = run("enrich", "--set", "nope", "--quiet", env=env)
    line = assert_clean_error(result, "'nope'", "unknown set")
    assert "real" in line  # says which sets exist


def test_enrich_without_a_token_names_the_variable(
    db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    seed_sets(db, {"a": sample_numbers(3)})
    del env[settings.TOKEN]
    result = run("enrich", "--all", "--quiet", env=env)
    assert_clean_error(result, settings.TOKEN)
    assert simulator.provider.ledger() == []


def test_enrich_with_a_malformed_setting_names_the_variable(
    db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    seed_sets(db, {"a": sample_numbers(3)})
    result = run("enrich", "--all", "--quiet", env=env | {settings.QPS: "fast"})
    assert_clean_error(result, settings.QPS)
    assert simulator.provider.ledger() == []


def test_enrich_stopped_by_the_provider_says_why(
    db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    seed_sets(db, {"a": sample_numbers(60)})
    simulator.provider.update_config(balance=5)
    result = run("enrich", "--set", "a", "--quiet", env=env)
    assert result.returncode == EXIT_STATUS["provider"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "4002" in errors[0]
    assert "Top up" in errors[0]
    assert len(simulator.provider.ledger(billed_only=True)) == 5
    assert DEMO_TOKEN not in result.stdout + result.stderr


def test_enrich_failing_at_start_on_a_fresh_database_prints_no_traceback(
    db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    seed_sets(db, {"a": sample_numbers(3)})
    result = run("enrich", "--all", "--quiet", env=env | {settings.TOKEN: "not a token"})
    assert result.returncode == EXIT_STATUS["input"]  # a malformed setting
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert simulator.provider.ledger() == []


def test_enrich_with_a_malformed_token_names_the_setting(
    db: Path, env: dict[str, str], simulator: SimulatorServer
) -> None:
    seed_sets(db, {"a": sample_numbers(3)})
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)  # not a fresh database: the summary can be printed
    result = run("enrich", "--all", "--quiet", env=env | {settings.TOKEN: "not a token"})
    assert result.returncode == EXIT_STATUS["input"]  # a malformed setting
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "token" in errors[0].replace(settings.TOKEN, "")
    assert "not a token" not in result.stdout + result.stderr
    assert simulator.provider.ledger() == []


# --- demo ------------------------------------------------------------------------------


def test_demo_runs_and_prints_its_steps(demo_run: DemoRun) -> None:
    directory, result = demo_run.directory, demo_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", out, flags=re.MULTILINE)]
    assert steps == list(range(1, len(steps) + 1))
    assert len(steps) >= 4
    for text in ("seeding", "simulator listening", "enriching every set", "enriching again"):
        assert text in out
    runs = re.findall(r"run \w+: succeeded; sent (\d+) .*billed (\d+) ", out)
    assert len(runs) == 2, out
    (sent1, billed1), (_, billed2) = runs
    assert int(billed1) > 0
    assert int(billed2) == 0  # the second run pays for nothing
    assert f"ledger shows {billed1} billed call(s)" in out
    assert "Traceback" not in result.stderr
    db = directory / "mobile_status.duckdb"
    assert query(db, "SELECT count(DISTINCT set_id) FROM mobile_status") == [(3,)]
    assert int(sent1) == query(db, "SELECT count(DISTINCT mobile) FROM mobile_status")[0][0]
    holding_numbers = [db, *directory.glob("*.csv"), *directory.glob("*.parquet")]
    assert len(holding_numbers) >= 4
    for path in holding_numbers:  # seeded lists, the database, exports: owner only
        assert path.stat().st_mode & 0o077 == 0, path


def test_demo_never_deletes_files_it_did_not_write(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    directory.mkdir()
    precious = directory / "thesis.txt"
    precious.write_text("years of work\n", encoding="utf-8")
    run("demo", "--dir", str(directory), env=base_env(), cwd=tmp_path)
    assert precious.exists()


def test_the_exit_status_follows_what_went_wrong(
    db: Path, env: dict[str, str], simulator: SimulatorServer, tmp_path: Path
) -> None:
    """0 done; 1 unfinished (the budget); 2 bad input; 3 the provider refused; 4 the store."""
    seed_sets(db, {"a": sample_numbers(8, seed=31)})
    budget = run("enrich", "--set", "a", "--max-billed", "2", "--quiet", env=env)
    assert budget.returncode == EXIT_STATUS["unfinished"], budget.stderr
    assert "budget" in budget.stderr

    missing = run("load", str(tmp_path / "absent.csv"), "--set", "b", env=env)
    assert missing.returncode == EXIT_STATUS["input"], missing.stderr

    wrong = "WRONGxTOKEN000000000000000000000"  # well formed, refused by the provider (4001)
    refused = run("enrich", "--set", "a", "--quiet", env=env | {settings.TOKEN: wrong})
    assert refused.returncode == EXIT_STATUS["provider"], refused.stderr
    assert "4001" in refused.stderr

    unusable = tmp_path / "notes.duckdb"
    unusable.write_text("not a database\n", encoding="utf-8")
    store = run("report", "--db", str(unusable), env=env)
    assert store.returncode == EXIT_STATUS["store"], store.stderr

    done = run("enrich", "--set", "a", "--quiet", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert len(set(EXIT_STATUS.values())) == len(EXIT_STATUS)  # one status per category
