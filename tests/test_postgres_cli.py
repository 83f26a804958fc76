"""The ``mobile-status`` command on the PostgreSQL store (the real console script, a real
server, the simulator on loopback): ``--store`` or ``$MOBILE_STATUS_STORE``; the URL's
password is never printed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import PRICE, cli_env, run_cli, sample_numbers, truth
from tests.test_cli import _charges, _summary_rows
from tests.test_postgres_engine import assert_published, pg_rows, seed_pg_sets


@pytest.fixture
def password(postgres_url: str) -> str:
    secret = PostgresTarget(postgres_url).password
    assert secret
    return secret


def statuses_of(numbers: list[str], invalid: int) -> list[int]:
    counts = [0] * 6
    for m in numbers:
        counts[truth(m)] += 1
    return [*counts, invalid]


def test_enrich_plan_and_report_on_postgresql(
    simulator: SimulatorServer, postgres_url: str, password: str, tmp_path: Path
) -> None:
    mobiles = sample_numbers(100, seed=51)
    sets = {"leads": [*mobiles[:70], "abc"], "signups": mobiles[50:]}
    seed_pg_sets(postgres_url, sets)
    # The DuckDB file of $MOBILE_STATUS_DB is not touched when the store is PostgreSQL.
    duckdb_file = tmp_path / "unused.duckdb"
    env = cli_env(simulator, duckdb_file, **{settings.STORE: postgres_url})
    shown: list[str] = []

    plan = run_cli("plan", "--all", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "to send (de-duplicated across sets): 100" in plan.stdout
    shown += [plan.stdout, plan.stderr]

    first = run_cli("enrich", "--set", "leads", "--quiet", env=env)
    assert first.returncode == 0, first.stderr
    billed = simulator.provider.ledger(billed_only=True)
    calls, charged, cost = _charges(first.stdout)
    assert (calls, charged) == (len(simulator.provider.ledger()), len(billed))
    assert cost == f"{Decimal(PRICE) * len(billed):.2f}"
    assert _summary_rows(first.stdout) == {"leads": statuses_of(mobiles[:70], 1)}
    assert_published(postgres_url, "leads", sets["leads"])
    shown += [first.stdout, first.stderr]

    # --store on the command line (here without the password: libpq reads PGPASSWORD).
    no_password = postgres_url.replace(f":{password}@", "@")
    env_flag = cli_env(simulator, duckdb_file, PGPASSWORD=password)
    second = run_cli("enrich", "--all", "--store", no_password, env=env_flag)
    assert second.returncode == 0, second.stderr
    assert list(_summary_rows(second.stdout)) == ["leads", "signups"]
    assert_published(postgres_url, "signups", sets["signups"])
    shown += [second.stdout, second.stderr]
    calls = len(simulator.provider.ledger())

    report = run_cli("report", env=env)
    assert report.returncode == 0, report.stderr
    rows = _summary_rows(report.stdout)
    assert rows == {
        "leads": statuses_of(mobiles[:70], 1),
        "signups": statuses_of(mobiles[50:], 0),
    }
    assert "charges by set (all runs):" in report.stdout
    shown += [report.stdout, report.stderr]

    again = run_cli("plan", "--all", "--store", postgres_url, env=cli_env(simulator, duckdb_file))
    assert again.returncode == 0, again.stderr
    unknown = sum(1 for m in mobiles if truth(m) == 0)  # asked again, for free
    assert f"to send (de-duplicated across sets): {unknown}" in again.stdout
    shown += [again.stdout, again.stderr]

    assert len(simulator.provider.ledger()) == calls  # planning and reporting cost nothing
    assert not duckdb_file.exists()
    billed_rows = pg_rows(postgres_url, "SELECT count(*) FROM provider_calls WHERE billed")
    assert billed_rows == [(len(simulator.provider.ledger(billed_only=True)),)]
    for text in shown:
        assert password not in text
        assert DEMO_TOKEN not in text


def test_the_store_schema_setting_keeps_every_table_in_that_schema(
    simulator: SimulatorServer, postgres_url: str, tmp_path: Path
) -> None:
    mobiles = sample_numbers(20, seed=52)
    seed_pg_sets(postgres_url, {"leads": mobiles}, schema="crm")
    env = cli_env(
        simulator,
        tmp_path / "unused.duckdb",
        **{settings.STORE: postgres_url, settings.STORE_SCHEMA: "crm"},
    )
    run = run_cli("enrich", "--set", "leads", "--quiet", env=env)
    assert run.returncode == 0, run.stderr
    tables = pg_rows(
        postgres_url,
        "SELECT table_schema, count(*) FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') GROUP BY 1",
    )
    assert [schema for schema, _ in tables] == ["crm"]  # nothing in public
    # The default source table is indexed by set, so a run reads only its sets.
    source_indexes = pg_rows(
        postgres_url,
        "SELECT schemaname, indexdef FROM pg_indexes WHERE tablename = 'number_sets'",
    )
    assert [(schema, "(set_id)" in str(ddl)) for schema, ddl in source_indexes] == [("crm", True)]
    published = pg_rows(postgres_url, "SELECT count(*) FROM crm.mobile_status")
    assert published == [(len(mobiles),)]
    assert pg_rows(postgres_url, "SELECT count(*) FROM crm.provider_calls WHERE billed") == [
        (len(simulator.provider.ledger(billed_only=True)),)
    ]

    empty = run_cli("report", env=env | {settings.STORE_SCHEMA: " "})
    assert empty.returncode == 2
    assert settings.STORE_SCHEMA in empty.stderr


def test_a_store_that_cannot_be_opened_is_named_without_its_password(
    simulator: SimulatorServer, postgres_url: str, password: str, tmp_path: Path
) -> None:
    wrong_db = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    wrong_password = postgres_url.replace(f":{password}@", ":not-the-password@")
    env = cli_env(simulator, tmp_path / "x.duckdb")
    # Each command on a missing database; a refused login (another libpq error) once.
    for url, secret, command in (
        (wrong_db, password, ("report",)),
        (wrong_db, password, ("plan", "--all")),
        (wrong_db, password, ("enrich", "--all", "--quiet")),
        (wrong_password, "not-the-password", ("enrich", "--all", "--quiet")),
    ):
        result = run_cli(*command, "--store", url, env=env)
        assert result.returncode == 4, (command, result.stdout, result.stderr)
        assert "PostgreSQL store postgresql://" in result.stderr
        assert secret not in result.stdout + result.stderr
    assert simulator.provider.ledger() == []


def test_a_malformed_store_url_is_refused_naming_the_setting(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    env = cli_env(simulator, tmp_path / "x.duckdb")
    result = run_cli("report", "--store", "postgresql://me:hunter2@localhost", env=env)
    assert result.returncode == 2
    assert "--store" in result.stderr
    assert "hunter2" not in result.stderr
    from_env = run_cli("report", env=env | {settings.STORE: "postgresql://me:hunter2@localhost"})
    assert from_env.returncode == 2
    assert settings.STORE in from_env.stderr
    assert "hunter2" not in from_env.stderr


def test_the_default_definitions_follow_mobile_status_store() -> None:
    from mobile_status_dagster.integration.definitions import (
        POSTGRES_RESOURCE_KEY,
        build_default_definitions,
        default_resources,
    )
    from mobile_status_dagster.integration.resources import PostgresStoreResource

    url = "postgresql://app:s3cr3t-pw@db.example.com/warehouse"
    deployment = settings.DeploymentSettings.from_env({settings.STORE: url})
    assert deployment.store == url
    assert "s3cr3t-pw" not in repr(deployment)
    assert deployment.store_shown == "postgresql://app:********@db.example.com/warehouse"
    resources = default_resources(deployment)
    assert set(resources) == {"mobile_status_api", POSTGRES_RESOURCE_KEY}
    store = resources[POSTGRES_RESOURCE_KEY]
    assert isinstance(store, PostgresStoreResource)
    assert store.url == settings.STORE  # an EnvVar: resolved at run start, never stored
    assert store.db_schema is None
    in_schema = settings.DeploymentSettings.from_env(
        {settings.STORE: url, settings.STORE_SCHEMA: "crm"}
    )
    assert default_resources(in_schema)[POSTGRES_RESOURCE_KEY].db_schema == "crm"
    assert in_schema.postgres is not None
    assert in_schema.postgres.schema == "crm"
    defs = build_default_definitions(deployment)
    assert POSTGRES_RESOURCE_KEY in defs.get_repository_def().get_top_level_resources()

    as_file = settings.DeploymentSettings.from_env({settings.STORE: "/data/w.duckdb"})
    assert (as_file.db, as_file.store) == ("/data/w.duckdb", None)
    unset = settings.DeploymentSettings.from_env({settings.DB: "/data/x.duckdb"})
    assert (unset.db, unset.store) == ("/data/x.duckdb", None)
    assert set(default_resources(unset)) == {"mobile_status_api", "duckdb"}


def test_load_enrich_and_export_on_postgresql_as_on_duckdb(
    simulator: SimulatorServer, postgres_url: str, password: str, tmp_path: Path
) -> None:
    """The same files loaded, enriched and exported through both stores give the same
    command output and the same exported rows (``checked_at`` aside)."""
    mobiles = sample_numbers(60, seed=52)
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text(
        "name,mobile\n"
        + "".join(f"p{i},+86 {m[:3]}-{m[3:7]}-{m[7:]}\n" for i, m in enumerate(mobiles[:40]))
        + "x,abc\ny,=cmd|calc\n",
        encoding="utf-8",
    )
    txt_file = tmp_path / "more.txt"
    txt_file.write_text("\n".join(mobiles[30:]) + "\n", encoding="utf-8")
    duckdb_file = tmp_path / "w.duckdb"
    stores = {
        "duckdb": cli_env(simulator, duckdb_file),
        "postgres": cli_env(
            simulator, tmp_path / "unused.duckdb", **{settings.STORE: postgres_url}
        ),
    }
    outputs: dict[str, list[str]] = {}
    exported: dict[str, dict[str, list[list[str]]]] = {}
    for name, env in stores.items():
        steps = [
            ("load", str(csv_file), "--set", "leads"),
            ("load", str(txt_file), "--set", "more"),
            ("load", str(txt_file), "--set", "more", "--replace"),
            ("enrich", "--all", "--quiet"),
        ]
        outputs[name] = []
        for step in steps:
            result = run_cli(*step, env=env)
            assert result.returncode == 0, (name, step, result.stderr)
            assert password not in result.stdout + result.stderr
            if step[0] == "load":
                outputs[name].append(result.stdout)
        exported[name] = {}
        for set_id, suffix in (("leads", "csv"), ("more", "parquet")):
            out = tmp_path / f"{name}-{set_id}.{suffix}"
            result = run_cli(
                "export",
                "--set",
                set_id,
                "--status",
                "online,vacant,powered_off",
                "--out",
                str(out),
                env=env,
            )
            assert result.returncode == 0, (name, result.stderr)
            assert password not in result.stdout + result.stderr
            assert out.stat().st_mode & 0o777 == 0o600
            exported[name][f"{set_id}.{suffix}"] = _rows_without_checked_at(out)
    assert outputs["postgres"] == outputs["duckdb"]
    assert "loaded 42 row(s) into set 'leads': 40 valid, 2 rejected" in outputs["postgres"][0]
    assert exported["postgres"] == exported["duckdb"]
    assert exported["postgres"]["leads.csv"]  # something was exported
    assert not (tmp_path / "unused.duckdb").exists()
    counts = pg_rows(postgres_url, "SELECT set_id, count(*) FROM number_sets GROUP BY 1 ORDER BY 1")
    assert counts == [("leads", 42), ("more", 30)]  # --replace replaced, did not append


def _rows_without_checked_at(path: Path) -> list[list[str]]:
    import duckdb

    with duckdb.connect() as conn:
        reader = "read_csv(?, all_varchar = true)" if path.suffix == ".csv" else "read_parquet(?)"
        relation = conn.sql(f"SELECT * EXCLUDE (checked_at) FROM {reader}", params=[str(path)])
        return [[str(v) for v in row] for row in relation.fetchall()]


def test_load_and_export_errors_on_postgresql_are_plain(
    simulator: SimulatorServer, postgres_url: str, password: str, tmp_path: Path
) -> None:
    env = cli_env(simulator, tmp_path / "x.duckdb", **{settings.STORE: postgres_url})
    missing = run_cli("load", str(tmp_path / "nope.csv"), "--set", "a", env=env)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    unpublished = run_cli("export", "--set", "a", "--out", str(tmp_path / "o.csv"), env=env)
    assert unpublished.returncode == 2
    assert "has no published rows" in unpublished.stderr
    for result in (missing, unpublished):
        assert password not in result.stdout + result.stderr
    assert not (tmp_path / "x.duckdb").exists()
