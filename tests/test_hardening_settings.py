"""Hardening of the settings: bounded ranges, prices that fit the audit, a journal segment
that cannot be folded is quarantined, the token masked however the resource is printed,
and a malformed base URL never echoed.

Each case of the hardening issue has a test here that fails without its fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import stat
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from mobile_status_dagster.cli.main import EXIT_STATUS
from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.client import settings as rules
from mobile_status_dagster.core.engine import EnrichmentJob, journal_dir_for
from mobile_status_dagster.core.engine.enrich import (
    QUARANTINE,
    EnrichmentReport,
    QuarantinedSegment,
    enrich,
    recover_journal,
)
from mobile_status_dagster.core.errors import (
    ConfigurationError,
    DatabaseOpenError,
    StoreError,
    StoreWriteError,
)
from mobile_status_dagster.core.money import MAX_PRICE, MONEY_SQL, parse_price
from mobile_status_dagster.core.store import Partition, SourceTable, file_connect
from mobile_status_dagster.core.store.connection import Connect, memory_limit_bytes
from mobile_status_dagster.core.store.record import JOURNAL_KEYS, fold_segment
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, ensure_schema
from mobile_status_dagster.integration import environment as env_settings
from mobile_status_dagster.integration.resources import MASKED, MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import (
    base_env,
    cli_env,
    one_run,
    query,
    run_cli,
    run_sets,
    sample_numbers,
    seed_sets,
)

# The module, not the function the package exports under the same name.
enrich_module = importlib.import_module("mobile_status_dagster.core.engine.enrich")
duckdb_store_module = importlib.import_module("mobile_status_dagster.core.store.duckdb_store")

TOKEN = "S3CRETt0ken0000111122223333abcd"
BASE: dict[str, Any] = {"base_url": "https://provider.example.com", "token": TOKEN}


def exception_text(error: BaseException) -> str:
    """Everything a traceback, ``str`` and ``repr`` of ``error`` show."""
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


# --- 1. every numeric setting has bounds --------------------------------------------------


def _outside(setting: rules.NumberSetting) -> list[float]:
    """Values just outside ``setting``'s range, and absurd ones."""
    if setting.integer:
        return [int(setting.minimum) - 1, int(setting.maximum) + 1, 100_000_000]
    below = [setting.minimum - 0.001] if setting.minimum > 0 else [-0.001]
    return [*below, setting.maximum * 1.001, 1e308, -1e308]


OUT_OF_RANGE = [(s, v) for s in rules.NUMBER_SETTINGS for v in _outside(s)]
OUT_OF_RANGE_IDS = [f"{s.name}={v!r}" for s, v in OUT_OF_RANGE]
RESOURCE_SETTINGS = (rules.TIMEOUT_S, rules.MAX_CONCURRENCY, rules.QPS, rules.MAX_RETRIES)
ENV_VARIABLES = {
    rules.MAX_CONCURRENCY: env_settings.MAX_CONCURRENCY,
    rules.QPS: env_settings.QPS,
    rules.TIMEOUT_S: env_settings.TIMEOUT_S,
}


def test_every_numeric_setting_has_a_documented_finite_range() -> None:
    expected = {
        "timeout_s": (0.1, 300),
        "max_concurrency": (1, 1024),
        "qps": (0.01, 100_000),
        "max_retries": (0, 100),
        "backoff_initial_s": (0, 60),
        "backoff_max_s": (0, 300),
    }
    assert {s.name: (s.minimum, s.maximum) for s in rules.NUMBER_SETTINGS} == expected
    for setting in rules.NUMBER_SETTINGS:
        assert setting.range_text in setting.description.lower()
        if setting.default is not None:
            assert setting.minimum <= setting.default <= setting.maximum
    fields = MobileStatusResource.model_fields
    for setting in RESOURCE_SETTINGS:
        assert fields[setting.name].description == setting.description
        assert f"to {setting.maximum:g}" in str(fields[setting.name].description)


@pytest.mark.parametrize(("setting", "value"), OUT_OF_RANGE, ids=OUT_OF_RANGE_IDS)
def test_client_settings_refuse_every_bound_naming_the_setting(
    setting: rules.NumberSetting, value: float
) -> None:
    values: dict[str, Any] = BASE | {setting.name: value}
    with pytest.raises(ConfigurationError) as caught:
        ClientSettings(**values)
    assert caught.value.setting == setting.name
    assert str(caught.value).startswith(f"{setting.name}: must be {setting.range_text}")


@pytest.mark.parametrize("setting", rules.NUMBER_SETTINGS, ids=lambda s: s.name)
def test_client_settings_accept_both_bounds(setting: rules.NumberSetting) -> None:
    for value in (setting.minimum, setting.maximum):
        typed = int(value) if setting.integer else float(value)
        extra: dict[str, Any] = {setting.name: typed}
        if setting is rules.BACKOFF_INITIAL_S:
            extra["backoff_max_s"] = rules.BACKOFF_MAX_S.maximum
        assert getattr(ClientSettings(**BASE, **extra), setting.name) == typed


RESOURCE_OUT_OF_RANGE = [(s, v) for s, v in OUT_OF_RANGE if s in RESOURCE_SETTINGS]


@pytest.mark.parametrize(
    ("setting", "value"),
    RESOURCE_OUT_OF_RANGE,
    ids=[f"{s.name}={v!r}" for s, v in RESOURCE_OUT_OF_RANGE],
)
def test_the_resource_refuses_every_bound_at_run_start(
    setting: rules.NumberSetting, value: float
) -> None:
    resource = MobileStatusResource(
        base_url="https://provider.example.com",
        token=dg.EnvVar("MOBILE_STATUS_TOKEN"),
        **{setting.name: value},
    )
    with pytest.raises(ConfigurationError) as caught:
        resource.setup_for_execution(dg.build_init_resource_context())
    assert caught.value.setting == setting.name


def test_a_run_with_a_huge_concurrency_fails_before_any_call(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"a": sample_numbers(5)})
    run = one_run(run_sets(simulator, db, ["a"], max_concurrency=100_000_000))
    assert not run.success
    assert run.message is not None
    assert "max_concurrency" in run.message
    assert simulator.provider.ledger() == []


ENV_OUT_OF_RANGE = [
    (env_settings.MAX_CONCURRENCY, "100000000"),
    (env_settings.MAX_CONCURRENCY, "1025"),
    (env_settings.MAX_CONCURRENCY, "0"),
    (env_settings.QPS, "1e-300"),
    (env_settings.QPS, "0.001"),
    (env_settings.QPS, "100001"),
    (env_settings.TIMEOUT_S, "1e308"),
    (env_settings.TIMEOUT_S, "300.5"),
    (env_settings.TIMEOUT_S, "0.05"),
]


@pytest.mark.parametrize(("variable", "value"), ENV_OUT_OF_RANGE)
def test_the_environment_refuses_every_bound_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        env_settings.DeploymentSettings.from_env({variable: value})
    assert caught.value.setting == variable
    assert str(caught.value).startswith(f"{variable}: must be ")


def test_the_environment_accepts_both_bounds() -> None:
    for setting, variable in ENV_VARIABLES.items():
        for bound in (setting.minimum, setting.maximum):
            text = str(int(bound)) if setting.integer else repr(float(bound))
            parsed = env_settings.DeploymentSettings.from_env({variable: text})
            assert getattr(parsed, setting.name) == bound


def _memory_limit(connect: Connect) -> int | None:
    with connect() as conn:
        return memory_limit_bytes(conn)


def test_duckdb_memory_is_bounded_by_default_and_the_setting_overrides_it(tmp_path: Path) -> None:
    """The library's connections cap DuckDB at 128 MB per core, not DuckDB's 80 % of RAM;
    ``MOBILE_STATUS_DUCKDB_MEMORY_LIMIT`` (a size, or a share such as DuckDB's ``80%``)
    and a resource's ``connection_config`` replace the cap."""
    db = str(tmp_path / "m.duckdb")
    with duckdb.connect() as bare:
        duckdb_default = memory_limit_bytes(bare)
    with duckdb.connect(config={"memory_limit": f"{128 * (os.cpu_count() or 1)}MB"}) as capped:
        per_core = memory_limit_bytes(capped)
    assert per_core is not None
    assert duckdb_default is not None
    assert per_core != duckdb_default
    assert _memory_limit(file_connect(db)) == per_core
    for value, expected in (("80%", duckdb_default), ("1GB", None)):
        parsed = env_settings.DeploymentSettings.from_env({env_settings.DUCKDB_MEMORY_LIMIT: value})
        assert parsed.duckdb_memory_limit == value
        limit = _memory_limit(file_connect(db, config={"memory_limit": value}))
        assert limit == expected if expected else limit not in (per_core, duckdb_default, None)


@pytest.mark.parametrize("limit", ["512KB", "256MB", "1GB", "3TB"])
def test_the_memory_limit_is_read_back_in_bytes(tmp_path: Path, limit: str) -> None:
    """What publishing sizes its insert batches from: DuckDB shows the limit rounded in
    binary units with one decimal (``244.1 MiB``, ``2.7 TiB``), read back to within 5 %."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    expected = int(limit[:-2]) * units[limit[-2:]]
    with file_connect(str(tmp_path / "m.duckdb"), config={"memory_limit": limit})() as conn:
        got = memory_limit_bytes(conn)
    assert got is not None
    assert abs(got - expected) <= expected / 20


@pytest.mark.parametrize("value", ["lots", "80", "-1", "1 GB RAM"])
def test_a_memory_limit_that_is_not_a_size_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        env_settings.DeploymentSettings.from_env({env_settings.DUCKDB_MEMORY_LIMIT: value})
    assert caught.value.setting == env_settings.DUCKDB_MEMORY_LIMIT
    assert repr(value) in str(caught.value)


def test_a_token_pasted_into_a_number_variable_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        env_settings.DeploymentSettings.from_env({env_settings.QPS: TOKEN})
    assert caught.value.setting == env_settings.QPS
    assert TOKEN not in exception_text(caught.value)


# --- 2. the price fits the audit column -----------------------------------------------------


@pytest.mark.parametrize(
    "price",
    [
        "1e13",
        "0.0000001",
        "12345678901234.5",
        "1000000000000",
        "999999999999.9999995",
        "0.05000001",
        Decimal("1e13"),
        "NaN",
        "inf",
        "-0.01",
        0.1 + 0.2,
    ],
    ids=repr,
)
def test_a_price_that_does_not_fit_the_audit_column_is_refused(price: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_price(price)
    assert caught.value.setting == "unit_price"
    with pytest.raises(ConfigurationError) as named:
        parse_price(price, setting=env_settings.UNIT_PRICE)
    assert named.value.setting == env_settings.UNIT_PRICE


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ("999999999999.999999", Decimal("999999999999.999999")),
        ("0.05", Decimal("0.05")),
        ("0.000001", Decimal("0.000001")),
        ("1.000000000", Decimal("1")),  # exact: trailing zeros are not rounding
        ("1e2", Decimal("100")),
        ("0", Decimal("0")),
    ],
)
def test_a_price_that_fits_is_accepted_exactly(text: str, exact: Decimal) -> None:
    price = parse_price(text)
    assert price == exact
    assert -6 <= int(price.as_tuple().exponent) <= 0
    with duckdb.connect() as conn:
        stored = conn.execute(f"SELECT CAST(? AS {MONEY_SQL})", [str(price)]).fetchone()
    assert stored == (exact,)


def test_the_resource_and_the_environment_refuse_a_price_too_large() -> None:
    resource = MobileStatusResource(
        base_url="https://provider.example.com",
        token=dg.EnvVar("MOBILE_STATUS_TOKEN"),
        unit_price="1e13",
    )
    with pytest.raises(ConfigurationError) as caught:
        resource.setup_for_execution(dg.build_init_resource_context())
    assert caught.value.setting == "unit_price"
    with pytest.raises(ConfigurationError) as env_caught:
        env_settings.DeploymentSettings.from_env({env_settings.UNIT_PRICE: "1e13"})
    assert env_caught.value.setting == env_settings.UNIT_PRICE


def engine_run(
    sim: SimulatorServer,
    db: Path,
    run_id: str,
    *,
    unit_price: Decimal = Decimal("0.05"),
    connect: Connect | None = None,
) -> EnrichmentReport:
    """One real enrichment of set ``s`` through the engine."""

    async def go() -> EnrichmentReport:
        settings = ClientSettings(base_url=sim.base_url, token=DEMO_TOKEN, max_concurrency=8)
        async with AsyncMobileStatusClient(settings) as client:
            job = EnrichmentJob(
                source=SourceTable(),
                partitions=(Partition("s"),),
                run_id=run_id,
                unit_price=unit_price,
            )
            return await enrich(
                job,
                client=client,
                connect=connect or file_connect(str(db)),
                journal_dir=journal_dir_for(str(db)),
            )

    return asyncio.run(go())


def test_a_real_fold_with_the_largest_price_works(simulator: SimulatorServer, db: Path) -> None:
    numbers = sample_numbers(30, seed=61)
    seed_sets(db, {"s": numbers})
    report = engine_run(simulator, db, "max", unit_price=parse_price(str(MAX_PRICE)))
    assert report.ok, report.stop_message()
    assert report.billed > 1
    rows = query(db, "SELECT DISTINCT unit_price FROM provider_calls")
    assert rows == [(MAX_PRICE,)]
    cost = query(db, "SELECT sum(unit_price) FILTER (WHERE billed) FROM provider_calls")
    assert cost == [(MAX_PRICE * report.billed,)]
    assert report.cost == MAX_PRICE * report.billed
    assert not list(journal_dir_for(str(db)).glob("*.jsonl"))


# --- 3. a segment that cannot be folded is quarantined ---------------------------------------


def journal_directory(db: Path) -> Path:
    directory = journal_dir_for(str(db))
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def plant_segment(
    directory: Path, run: str, mobile: str, order: str, *, price: str = "1e13"
) -> Path:
    """A leftover segment in the journal format (a header, one billed answer), private."""
    header = {"run": run, "price": price, "cur": "CNY"}
    line = {
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
    assert set(header) | set(line) <= set(JOURNAL_KEYS)
    path = directory / f"{run}-4242-000001.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (json.dumps(header) + "\n" + json.dumps(line) + "\n").encode())
    os.close(fd)
    return path


def audit_orders(db: Path) -> list[str]:
    return sorted(str(o) for (o,) in query(db, "SELECT order_number FROM provider_calls"))


def test_the_planted_segment_really_cannot_be_folded(db: Path, tmp_path: Path) -> None:
    path = plant_segment(tmp_path, "poisoned", "13912345678", "BAD")
    with file_connect(str(db))() as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        with pytest.raises(duckdb.ConversionException):
            fold_segment(conn, path, tables=DEFAULT_TABLES)


def test_recovery_quarantines_a_segment_it_cannot_fold_and_goes_on(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = journal_directory(db)
    poisoned = plant_segment(directory, "poisoned", "13912345678", "BAD")
    plant_segment(directory, "genuine", "13900000009", "GOOD", price="0.05")
    seen: list[QuarantinedSegment] = []
    with caplog.at_level(logging.WARNING, logger="mobile_status_dagster"):
        recovered = recover_journal(file_connect(str(db)), directory, on_quarantine=seen.append)
    assert recovered == 1  # the genuine segment's answer; the quarantined one counts nothing
    assert audit_orders(db) == ["GOOD"]
    moved = directory / QUARANTINE / poisoned.name
    assert moved.is_file()
    assert not poisoned.exists()
    assert stat.S_IMODE(os.stat(directory / QUARANTINE).st_mode) == 0o700
    assert "1e13" in moved.read_text(encoding="utf-8")  # kept as it was, for a person
    assert not list(directory.glob("*.jsonl"))
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    for text in (poisoned.name, str(moved), "ConversionException", "NOT in the audit"):
        assert text in logged
    assert "13912345678" not in logged
    (quarantined,) = seen
    assert (quarantined.segment, quarantined.path) == (poisoned.name, moved)
    assert (quarantined.attempts, quarantined.billed) == (1, 1)
    note = Path(f"{moved}.reason.txt").read_text(encoding="utf-8")
    assert poisoned.name in note
    assert "move it back" in note
    # A second recovery has nothing left to do and does not fail.
    assert recover_journal(file_connect(str(db)), directory) == 0
    assert audit_orders(db) == ["GOOD"]


def test_a_fixed_quarantined_segment_moved_back_is_folded(db: Path) -> None:
    directory = journal_directory(db)
    poisoned = plant_segment(directory, "poisoned", "13912345678", "BAD")
    recover_journal(file_connect(str(db)), directory)
    moved = directory / QUARANTINE / poisoned.name
    moved.write_text(moved.read_text(encoding="utf-8").replace('"1e13"', '"0.05"'))
    moved.rename(poisoned)
    assert recover_journal(file_connect(str(db)), directory) == 1
    assert audit_orders(db) == ["BAD"]


def test_a_real_enrichment_goes_on_past_a_poisoned_segment_and_reruns_cleanly(
    simulator: SimulatorServer, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = sample_numbers(20, seed=62)
    seed_sets(db, {"s": numbers})
    directory = journal_directory(db)
    poisoned = plant_segment(directory, "poisoned", numbers[0], "BAD")
    with caplog.at_level(logging.ERROR, logger="mobile_status_dagster"):
        report = engine_run(simulator, db, "first")
    assert report.ok, report.stop_message()
    assert [q.segment for q in report.quarantined] == [poisoned.name]
    assert poisoned.name in "\n".join(report.warnings)
    assert poisoned.name in caplog.text
    assert (directory / QUARANTINE / poisoned.name).is_file()
    assert "BAD" not in audit_orders(db)
    answered = query(db, "SELECT count(*) FROM mobile_status WHERE status_code IS NOT NULL")
    assert answered == [(len(numbers),)]
    rerun = engine_run(simulator, db, "second")
    assert rerun.ok
    assert rerun.quarantined == []


def test_a_dagster_run_goes_on_past_a_poisoned_segment(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"a": sample_numbers(10, seed=63)})
    directory = journal_directory(db)
    poisoned = plant_segment(directory, "poisoned", "13912345678", "BAD")
    first = one_run(run_sets(simulator, db, ["a"]))
    second = one_run(run_sets(simulator, db, ["a"]))
    assert first.success, first.message
    assert second.success, second.message
    assert (directory / QUARANTINE / poisoned.name).is_file()


class LockedConnect:
    """A :data:`Connect` whose every open fails as if another process held the file."""

    @contextlib.contextmanager
    def __call__(self) -> Iterator[duckdb.DuckDBPyConnection]:
        raise duckdb.IOException("IO Error: Could not set lock on file")
        yield  # pragma: no cover


def test_a_database_that_cannot_be_opened_still_fails_and_quarantines_nothing(
    db: Path,
) -> None:
    directory = journal_directory(db)
    poisoned = plant_segment(directory, "poisoned", "13912345678", "BAD")
    with pytest.raises(DatabaseOpenError) as caught:
        recover_journal(LockedConnect(), directory)
    assert isinstance(caught.value, StoreError)
    assert poisoned.name in str(caught.value)
    missing = file_connect(str(db.parent / "no such dir" / "x.duckdb"), lock_wait_s=0)
    with pytest.raises(DatabaseOpenError):
        recover_journal(missing, directory)
    assert poisoned.exists()
    assert not (directory / QUARANTINE).exists()


def test_a_disk_error_while_folding_keeps_the_segment_in_the_journal(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = journal_directory(db)
    good = plant_segment(directory, "genuine", "13900000009", "GOOD", price="0.05")

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise duckdb.IOException("IO Error: No space left on device")

    monkeypatch.setattr(duckdb_store_module, "fold_segment", full_disk)
    with pytest.raises(StoreWriteError) as caught:
        recover_journal(file_connect(str(db)), directory)
    assert good.name in str(caught.value)
    assert "rerun" in str(caught.value)
    assert good.exists()
    assert not (directory / QUARANTINE).exists()


def test_an_in_run_fold_failure_says_what_to_do_and_the_next_run_quarantines_it(
    simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = sample_numbers(20, seed=64)
    seed_sets(db, {"s": numbers})
    real_fold: Callable[..., Any] = fold_segment

    def refuse_first_run(conn: duckdb.DuckDBPyConnection, path: Path, **kw: Any) -> Any:
        if path.name.startswith("first-"):
            raise duckdb.ConversionException("Conversion Error: refused for the test")
        return real_fold(conn, path, **kw)

    monkeypatch.setattr(duckdb_store_module, "fold_segment", refuse_first_run)
    with pytest.raises(StoreWriteError) as caught:
        engine_run(simulator, db, "first")
    message = str(caught.value)
    directory = journal_dir_for(str(db))
    for text in (str(directory), "rerun", QUARANTINE, "first-"):
        assert text in message
    kept = sorted(p.name for p in directory.glob("first-*.jsonl"))
    assert kept

    report = engine_run(simulator, db, "second")
    assert report.ok, report.stop_message()
    assert sorted(q.segment for q in report.quarantined) == kept
    assert sorted(p.name for p in (directory / QUARANTINE).glob("*.jsonl")) == kept


# --- 4. the token is masked however the resource is printed -------------------------------


def _resource(**changes: Any) -> MobileStatusResource:
    values: dict[str, Any] = {"base_url": "https://provider.example.com", "token": TOKEN}
    return MobileStatusResource(**(values | changes))


def shown_forms(resource: MobileStatusResource) -> list[str]:
    """Everything a user could print or log of ``resource``."""
    return [
        str(resource),
        repr(resource),
        f"{resource}",
        f"{resource!r}",
        f"{resource!s}",
        format(resource, ""),
        "%s %r" % (resource, resource),  # noqa: UP031 - logging formats this way
        repr(list(resource.__repr_args__())),
        repr(resource.model_dump()),
        repr(resource.model_dump(mode="json")),
        resource.model_dump_json(),
        resource.model_dump_json(include={"token"}),
    ]


def test_the_token_is_masked_in_every_printed_form() -> None:
    resource = _resource()
    for text in shown_forms(resource):
        assert TOKEN not in text, text
    assert resource.model_dump()["token"] == MASKED
    assert json.loads(resource.model_dump_json())["token"] == MASKED
    assert f"token={MASKED!r}" in repr(resource)
    # What Dagster builds the run's configuration from still carries the real token.
    assert dict(resource)["token"] == TOKEN
    assert resource.client_settings().secret.reveal() == TOKEN


def test_credentials_in_a_resource_url_are_never_printed() -> None:
    resource = _resource(base_url="https://alice42:pw-S3cret@provider.example.com")
    for text in shown_forms(resource):
        assert "pw-S3cret" not in text, text
        assert "alice42" not in text, text
    with pytest.raises(ConfigurationError) as caught:
        resource.check_settings()
    assert caught.value.setting == "base_url"
    assert "pw-S3cret" not in exception_text(caught.value)


def test_a_logged_resource_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    resource = _resource()
    with caplog.at_level(logging.INFO):
        logging.getLogger("user.code").info("resource %s / %r", resource, resource)
    assert caplog.records
    assert TOKEN not in caplog.text


def test_a_materialization_still_works_with_a_literal_token(
    simulator: SimulatorServer, db: Path
) -> None:
    numbers = sample_numbers(10, seed=65)
    seed_sets(db, {"a": numbers})
    run = one_run(run_sets(simulator, db, ["a"]))  # resources_for passes a literal token
    assert run.success, run.message
    assert simulator.provider.ledger()
    assert all(e.code != 4001 for e in simulator.provider.ledger())


def test_a_materialization_still_works_with_an_env_var_token(
    simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = sample_numbers(10, seed=66)
    seed_sets(db, {"a": numbers})
    monkeypatch.setenv("MOBILE_STATUS_TOKEN", DEMO_TOKEN)
    run = one_run(run_sets(simulator, db, ["a"], token=dg.EnvVar("MOBILE_STATUS_TOKEN")))
    assert run.success, run.message
    assert simulator.provider.ledger()
    assert all(e.code != 4001 for e in simulator.provider.ledger())


# --- 5. a malformed base URL is never echoed ------------------------------------------------

URL_SHAPED = "https-" + TOKEN  # a token pasted into the URL variable
PASTED = [
    TOKEN,
    URL_SHAPED,
    f"token={TOKEN}",
    f"https:/{TOKEN}",
    f"ftp://{TOKEN}.example.com",
    f"https://provider.example.com/?token={TOKEN}",
    f"https://provider.example.com/#{TOKEN}",
    f"https://{TOKEN}@provider.example.com",
    f"https://user:{TOKEN}@provider.example.com",
    f"https://provider.example.com/ {TOKEN}",
    f"https://provider.example.com:{TOKEN}",
    f"http://[{TOKEN}",
]


@pytest.mark.parametrize("value", PASTED)
def test_a_malformed_base_url_is_refused_without_echoing_it(value: str) -> None:
    for setting in ("base_url", env_settings.BASE_URL):
        with pytest.raises(ConfigurationError) as caught:
            rules.validated_base_url(value, setting=setting)
        assert caught.value.setting == setting
        assert TOKEN not in exception_text(caught.value)
    with pytest.raises(ConfigurationError) as client:
        ClientSettings(base_url=value, token=DEMO_TOKEN)
    assert TOKEN not in exception_text(client.value)
    with pytest.raises(ConfigurationError) as env:
        env_settings.DeploymentSettings.from_env({env_settings.BASE_URL: value})
    assert env.value.setting == env_settings.BASE_URL
    assert TOKEN not in exception_text(env.value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("provider.example.com", "http(s)"),
        ("http://", "host"),
        ("https://provider.example.com/?x=1", "query"),
        ("https://bob:pw-S3cret@provider.example.com", "credentials"),
        ("https://bob@provider.example.com", "credentials"),
    ],
)
def test_the_error_says_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        rules.validated_base_url(value)
    assert says in str(caught.value)
    assert "pw-S3cret" not in str(caught.value)
    assert "bob" not in str(caught.value)


def test_the_command_never_prints_a_token_pasted_into_the_base_url(db: Path) -> None:
    seed_sets(db, {"s": sample_numbers(3)})
    env = base_env(
        **{
            env_settings.DB: str(db),
            env_settings.BASE_URL: URL_SHAPED,
            env_settings.TOKEN: DEMO_TOKEN,
        }
    )
    result = run_cli("enrich", "--set", "s", env=env)
    assert result.returncode == EXIT_STATUS["input"], result.stderr
    assert env_settings.BASE_URL in result.stderr
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_the_command_refuses_credentials_in_the_base_url(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"s": sample_numbers(3)})
    url = simulator.base_url.replace("http://", "http://alice42:pw-S3cret@")
    result = run_cli(
        "enrich", "--set", "s", env=cli_env(simulator, db, **{env_settings.BASE_URL: url})
    )
    assert result.returncode == EXIT_STATUS["input"], result.stderr
    assert env_settings.BASE_URL in result.stderr
    assert "credentials" in result.stderr
    assert "pw-S3cret" not in result.stderr + result.stdout
    assert simulator.provider.ledger() == []
