"""Several instances in one ``Definitions``: two source tables, two provider accounts.

Instance A keeps the default names and reads ``number_sets``; instance B has
``key_prefix="crm"`` and reads ``crm_phone_lists`` (``list_id``, ``phone``) from the same
DuckDB file, through a second provider account (a second simulator with another token).
The tests load both in one ``dg.Definitions``, run real materializations of each, and
check that nothing of one instance reaches the other's provider, tables or names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.integration.assets import MobileStatusAssets, build_mobile_status_assets
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from tests.support import PRICE, asked, query, sample_numbers, seed_sets

CRM_TOKEN = "CRMACCOUNT0TOKEN0000000000000000"
CRM_SOURCE = "crm_phone_lists"
CHECK_NAMES = {"coverage", "audit_reconciliation", "no_double_billing"}
A_SET = "a-leads"
B_LIST = "b-list"


# --- helpers --------------------------------------------------------------------------


def seed_crm(db: Path, lists: Mapping[str, Iterable[str]]) -> None:
    """Create ``crm_phone_lists (list_id, phone)`` in ``db`` and append the rows."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {CRM_SOURCE} (list_id VARCHAR NOT NULL, phone VARCHAR)"
        )
        for list_id, phones in lists.items():
            conn.executemany(
                f"INSERT INTO {CRM_SOURCE} (list_id, phone) VALUES (?, ?)",
                [(list_id, p) for p in phones],
            )


def build_pair() -> tuple[MobileStatusAssets, MobileStatusAssets]:
    """Instance A (default names, ``number_sets``) and B (``crm``, ``crm_phone_lists``)."""
    a = build_mobile_status_assets()
    b = build_mobile_status_assets(
        source_table=CRM_SOURCE, set_column="list_id", mobile_column="phone", key_prefix="crm"
    )
    return a, b


def merged(
    a: MobileStatusAssets, b: MobileStatusAssets, a_url: str, b_url: str, db: Path
) -> dg.Definitions:
    """Both instances in one ``Definitions``: one API resource each, one shared DuckDB."""
    api: dict[str, Any] = {"unit_price": PRICE, "max_retries": 2, "timeout_s": 5.0}
    return dg.Definitions.merge(
        a.definitions,
        b.definitions,
        dg.Definitions(
            resources={
                a.api_resource_key: MobileStatusResource(base_url=a_url, token=DEMO_TOKEN, **api),
                b.api_resource_key: MobileStatusResource(base_url=b_url, token=CRM_TOKEN, **api),
                "duckdb": DuckDBResource(database=str(db)),
            }
        ),
    )


def mobiles(db: Path, table: str) -> list[str]:
    """The distinct numbers in column ``mobile`` of ``table``, sorted."""
    return [str(m) for (m,) in query(db, f"SELECT DISTINCT mobile FROM {table} ORDER BY 1")]


def set_ids(db: Path, table: str) -> list[str]:
    """The distinct set ids of ``table``, sorted."""
    return [str(s) for (s,) in query(db, f"SELECT DISTINCT set_id FROM {table} ORDER BY 1")]


def check_results(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    """``(asset key, check name) -> passed`` for the checks evaluated in run ``run_id``."""
    found: dict[tuple[str, str], bool] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = record.dagster_event
        assert event is not None
        evaluation = event.event_specific_data
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        found[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation.passed
    return found


def expected_checks(asset_key: str) -> dict[tuple[str, str], bool]:
    """Every check of ``asset_key``, passed."""
    return {(asset_key, name): True for name in CHECK_NAMES}


@pytest.fixture
def crm_simulator() -> Iterator[SimulatorServer]:
    """A second provider account: its own simulator, which accepts only ``CRM_TOKEN``."""
    with SimulatorServer(SimulatorConfig(token=CRM_TOKEN, latency_ms=0)) as server:
        yield server


# --- tests ----------------------------------------------------------------------------


def test_two_instances_load_in_one_definitions_with_distinct_names(db: Path) -> None:
    """Both instances load in one ``Definitions``; no asset, check, sensor, schedule,
    partitions definition, pool, group or resource key is shared except ``duckdb``, and
    each instance's sensors only see (and only target) that instance."""
    numbers = sample_numbers(10, seed=31)
    seed_sets(db, {A_SET: numbers[:5]})
    seed_crm(db, {B_LIST: numbers[5:]})
    a, b = build_pair()
    defs = merged(a, b, "http://127.0.0.1:1", "http://127.0.0.1:2", db)
    dg.Definitions.validate_loadable(defs)

    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "mobile_status",
        "mobile_status_summary",
        "mobile_status_charges",
        "crm/mobile_status",
        "crm/mobile_status_summary",
        "crm/mobile_status_charges",
    }
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == {
        *expected_checks("mobile_status"),
        *expected_checks("crm/mobile_status"),
    }
    assert sorted(s.name for s in defs.sensors or []) == [
        "crm_mobile_status_automation",
        "crm_mobile_status_new_sets",
        "mobile_status_automation",
        "mobile_status_new_sets",
    ]
    assert sorted(s.name for s in defs.schedules or []) == [
        "crm_mobile_status_refresh_stale",
        "mobile_status_refresh_stale",
    ]

    a_asset = defs.resolve_assets_def(dg.AssetKey("mobile_status"))
    b_asset = defs.resolve_assets_def(dg.AssetKey(["crm", "mobile_status"]))
    assert isinstance(a_asset.partitions_def, dg.DynamicPartitionsDefinition)
    assert isinstance(b_asset.partitions_def, dg.DynamicPartitionsDefinition)
    assert (a_asset.partitions_def.name, b_asset.partitions_def.name) == (
        "mobile_status_sets",
        "crm_mobile_status_sets",
    )
    assert (a_asset.op.pool, b_asset.op.pool) == (
        "mobile_status_provider",
        "crm_mobile_status_provider",
    )
    assert a_asset.group_names_by_key[a_asset.key] == "mobile_status"
    assert b_asset.group_names_by_key[b_asset.key] == "crm_mobile_status"
    assert {"mobile_status_api", "duckdb"} <= a_asset.required_resource_keys
    assert "crm_mobile_status_api" not in a_asset.required_resource_keys
    assert {"crm_mobile_status_api", "duckdb"} <= b_asset.required_resource_keys
    assert "mobile_status_api" not in b_asset.required_resource_keys
    assert set(defs.resources or {}) == {"mobile_status_api", "crm_mobile_status_api", "duckdb"}

    # Each automation sensor targets only its own derived assets.
    for prefix, name in (
        ("", "mobile_status_automation"),
        ("crm/", "crm_mobile_status_automation"),
    ):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.asset_selection is not None
        targets = {k.to_user_string() for k in sensor.asset_selection.resolve(graph)}
        assert targets == {f"{prefix}mobile_status_summary", f"{prefix}mobile_status_charges"}

    # Each new-sets sensor reads its own source table into its own partitions definition.
    instance = dg.DagsterInstance.ephemeral()
    requested: dict[str, list[str]] = {}
    for name in ("mobile_status_new_sets", "crm_mobile_status_new_sets"):
        context = dg.build_sensor_context(
            instance=instance, resources={"duckdb": DuckDBResource(database=str(db))}
        )
        result = defs.resolve_sensor_def(name)(context)
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest)
            requested[request.partitions_def_name] = list(request.partition_keys)
    assert requested == {"mobile_status_sets": [A_SET], "crm_mobile_status_sets": [B_LIST]}


def test_two_instances_run_apart_in_one_database(
    db: Path, simulator: SimulatorServer, crm_simulator: SimulatorServer
) -> None:
    """A set of each instance is materialized through the merged resources, one Dagster
    instance for both: each provider account sees exactly its own instance's numbers
    (with its own token), each instance's published rows, cache, audit and summary hold
    only its own numbers and sets, each audit reconciles with its provider's bill, and
    the checks of both pass.

    Five numbers are in both source tables: they are paid once per account, because the
    instances share no cache (one account's answers are not the other's).
    """
    numbers = sample_numbers(45, seed=41)
    a_numbers = numbers[:25]
    b_numbers = numbers[20:]  # 20..24 are in both tables
    seed_sets(db, {A_SET: a_numbers})
    # The CRM table spells its numbers with a country code, as CRMs export them.
    seed_crm(db, {B_LIST: [f"+86 {n[:3]}-{n[3:7]}-{n[7:]}" for n in b_numbers]})
    a, b = build_pair()
    defs = merged(a, b, simulator.base_url, crm_simulator.base_url, db)
    resources = defs.resources or {}
    instance = dg.DagsterInstance.ephemeral()

    outcomes: dict[str, RunOutcome] = {}
    for built, set_id in ((a, A_SET), (b, B_LIST)):
        runs = materialize_sets(
            built, resources=resources, instance=instance, set_ids=[set_id], log_level="WARNING"
        )
        assert [(r.set_ids, r.success, r.message) for r in runs] == [((set_id,), True, None)]
        outcomes[set_id] = runs[0]

    # Each account saw exactly its own instance's numbers, each once, with its own token.
    a_ledger = simulator.provider.ledger()
    b_ledger = crm_simulator.provider.ledger()
    assert asked(a_ledger) == sorted(a_numbers)
    assert asked(b_ledger) == sorted(b_numbers)
    assert all(e.token_ok for e in [*a_ledger, *b_ledger])
    assert outcomes[A_SET].usage.sent_to_provider == len(a_numbers)
    assert outcomes[B_LIST].usage.sent_to_provider == len(b_numbers)

    # Published rows, cache and audit: each instance's tables hold only its own numbers.
    a_tables, b_tables = Tables(), Tables("crm_")
    for tables, own in ((a_tables, a_numbers), (b_tables, b_numbers)):
        assert mobiles(db, tables.published) == sorted(own)
        assert mobiles(db, tables.cache) == sorted(own)
        assert mobiles(db, tables.audit) == sorted(own)
    assert query(db, f"SELECT set_id, count(*) FROM {a_tables.published} GROUP BY ALL") == [
        (A_SET, len(a_numbers))
    ]
    assert query(db, f"SELECT set_id, count(*) FROM {b_tables.published} GROUP BY ALL") == [
        (B_LIST, len(b_numbers))
    ]
    raw = query(db, f"SELECT mobile_raw FROM {b_tables.published} WHERE mobile = ?", [numbers[30]])
    assert raw == [(f"+86 {numbers[30][:3]}-{numbers[30][3:7]}-{numbers[30][7:]}",)]

    # Each audit reconciles with its own account's bill, call by call.
    for tables, sim in ((a_tables, simulator), (b_tables, crm_simulator)):
        audit = query(db, f"SELECT order_number, mobile FROM {tables.audit} WHERE billed")
        billed = sim.provider.ledger(billed_only=True)
        assert sorted(audit) == sorted((e.order_number, e.mobile) for e in billed)
        charges = query(db, f"SELECT sum(billed_calls) FROM {tables.charges}")
        assert charges == [(len(billed),)]

    # The summaries (and charges) hold only their own instance's sets.
    assert set_ids(db, a_tables.summary) == [A_SET]
    assert set_ids(db, b_tables.summary) == [B_LIST]
    assert query(db, f"SELECT sum(numbers) FROM {a_tables.summary}") == [(len(a_numbers),)]
    assert query(db, f"SELECT sum(numbers) FROM {b_tables.summary}") == [(len(b_numbers),)]
    assert set_ids(db, a_tables.charges) == [A_SET]
    assert set_ids(db, b_tables.charges) == [B_LIST]

    # Each run evaluated its own instance's three checks, and they passed.
    assert check_results(instance, outcomes[A_SET].run_id) == expected_checks("mobile_status")
    assert check_results(instance, outcomes[B_LIST].run_id) == expected_checks("crm/mobile_status")

    # Partitions and materializations are recorded under each instance's own names.
    assert instance.get_dynamic_partitions("mobile_status_sets") == [A_SET]
    assert instance.get_dynamic_partitions("crm_mobile_status_sets") == [B_LIST]
    for key, set_id in ((a.enrichment.key, A_SET), (b.enrichment.key, B_LIST)):
        records = instance.fetch_materializations(key, limit=10).records
        assert [r.partition_key for r in records] == [set_id]


# --- names ----------------------------------------------------------------------------


def names_of(names: MobileStatusNames) -> dict[str, str]:
    """Every name of ``names`` that is not an asset key, by what it names."""
    tables = names.tables
    return {
        "partitions": names.partitions,
        "new_sets_sensor": names.new_sets_sensor,
        "automation_sensor": names.automation_sensor,
        "stale_schedule": names.stale_schedule,
        "pool": names.pool,
        "group": names.group,
        "api_resource_key": names.api_resource_key,
        "cache": tables.cache,
        "audit": tables.audit,
        "published": tables.published,
        "segments": tables.segments,
        "summary": tables.summary,
        "charges": tables.charges,
    }


DEFAULT_NAMES = {
    "partitions": "mobile_status_sets",
    "new_sets_sensor": "mobile_status_new_sets",
    "automation_sensor": "mobile_status_automation",
    "stale_schedule": "mobile_status_refresh_stale",
    "pool": "mobile_status_provider",
    "group": "mobile_status",
    "api_resource_key": "mobile_status_api",
    "cache": '"mobile_status_latest"',
    "audit": '"provider_calls"',
    "published": '"mobile_status"',
    "segments": '"journal_segments"',
    "summary": '"mobile_status_summary"',
    "charges": '"mobile_status_charges"',
}


def prefixed(prefix: str) -> dict[str, str]:
    """The default names with ``prefix`` in front (inside the quotes of table names)."""
    return {
        k: f'"{prefix}{v[1:]}' if v.startswith('"') else f"{prefix}{v}"
        for k, v in DEFAULT_NAMES.items()
    }


def test_default_names_are_the_single_instance_names() -> None:
    """No prefix keeps today's names, whether given as ``None``, ``()`` or ``[]``."""
    spellings: list[Sequence[str] | None] = [None, (), []]
    for spelling in spellings:
        names = MobileStatusNames.of(spelling)
        assert names == MobileStatusNames()
        assert names.prefix == ""
        assert names_of(names) == DEFAULT_NAMES
        assert (names.enrichment, names.summary, names.charges) == (
            dg.AssetKey("mobile_status"),
            dg.AssetKey("mobile_status_summary"),
            dg.AssetKey("mobile_status_charges"),
        )


def test_every_name_derives_from_the_prefix() -> None:
    """``"crm"`` and ``["crm"]`` give the same names; each name is the default behind
    ``crm_``, and the asset keys go under ``crm/``."""
    names = MobileStatusNames.of("crm")
    assert names == MobileStatusNames.of(["crm"]) == MobileStatusNames(("crm",))
    assert names_of(names) == prefixed("crm_")
    assert names.tables == Tables("crm_")
    assert (names.enrichment, names.summary, names.charges) == (
        dg.AssetKey(["crm", "mobile_status"]),
        dg.AssetKey(["crm", "mobile_status_summary"]),
        dg.AssetKey(["crm", "mobile_status_charges"]),
    )


def test_the_factory_applies_a_two_part_prefix_everywhere() -> None:
    """``build_mobile_status_assets(key_prefix=["crm", "cn"])`` puts every definition it
    builds under ``crm/cn`` or ``crm_cn_``: assets, checks, partitions, sensors, schedule,
    pool, group, the API resource key and the tables in the asset metadata; the DuckDB
    resource key stays the shared ``duckdb``."""
    built = build_mobile_status_assets(key_prefix=["crm", "cn"])
    assert built.names == MobileStatusNames(("crm", "cn"))
    expected = prefixed("crm_cn_")
    enrichment = built.enrichment
    assert enrichment.key == dg.AssetKey(["crm", "cn", "mobile_status"])
    assert [r.key for r in built.reporting] == [
        dg.AssetKey(["crm", "cn", "mobile_status_summary"]),
        dg.AssetKey(["crm", "cn", "mobile_status_charges"]),
    ]
    assert {(k.asset_key, k.name) for c in built.checks for k in c.check_keys} == {
        (enrichment.key, name) for name in CHECK_NAMES
    }
    assert isinstance(built.partitions_def, dg.DynamicPartitionsDefinition)
    assert built.partitions_def.name == expected["partitions"]
    assert enrichment.partitions_def == built.partitions_def
    assert sorted(s.name for s in built.definitions.sensors or []) == sorted(
        [expected["new_sets_sensor"], expected["automation_sensor"]]
    )
    assert [s.name for s in built.definitions.schedules or []] == [expected["stale_schedule"]]
    assert enrichment.op.pool == expected["pool"]
    for asset in (enrichment, *built.reporting):
        assert asset.group_names_by_key[asset.key] == expected["group"]
    assert built.api_resource_key == expected["api_resource_key"]
    assert built.api_resource_key in enrichment.required_resource_keys
    assert built.duckdb_resource_key == "duckdb"
    table_names = [
        a.metadata_by_key[a.key]["dagster/table_name"] for a in (enrichment, *built.reporting)
    ]
    assert table_names == [
        "crm_cn_mobile_status",
        "crm_cn_mobile_status_summary",
        "crm_cn_mobile_status_charges",
    ]


@pytest.mark.parametrize("bad", ["crm-cn", "a b", "", "crm.cn", ["crm", "c n"], ["ok", ""]])
def test_an_invalid_prefix_part_is_refused(bad: str | Sequence[str]) -> None:
    """A prefix part that is not letters, digits and underscores is refused at definition
    time, by the names and by the factory, and the error names ``key_prefix``."""
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="key_prefix"):
        MobileStatusNames.of(bad)
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="key_prefix"):
        build_mobile_status_assets(key_prefix=bad)
