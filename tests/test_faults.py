"""Provider faults and hostile input, through real Dagster runs against the simulator.

Each provider fault is injected alone, then all together, while ``mobile_status`` is
materialized over a few hundred numbers (``tests.support.run_sets``, the CLI's path).
For every fault the tests check the product's promise against the provider's ledger:

- the run ends in a defined state: success, or a failure whose message says what
  happened and what to do;
- every attempt the provider saw is in ``provider_calls``, matched entry by entry
  (answers by order number; timeouts and cut connections marked ``possibly_billed``);
- every paid answer that reached the client is in the audit and the cache;
- a rerun after the fault clears publishes every set and pays only for what was
  missing: no number is billed twice except those whose billed answer never arrived.

The provider faults, all faults together, the provider unreachable, the hostile input
(ten thousand rows, set ids with quotes through the CLI, unknown sets, a factory pointed at a
missing table or column) run on both stores: the ``warehouse`` fixture (``tests.warehouses``,
ids ``duckdb`` / ``postgresql``). On PostgreSQL the hostile rows hold U+FFFD where DuckDB's
hold NUL (PostgreSQL text cannot hold NUL). Three stay DuckDB-only: the sensor over a missing
column and the refused settings (CLI and resource) check what reaches a DuckDB file before
any run and are about configuration, not the store.

The resource does not expose the client's backoff (``backoff_initial_s`` /
``backoff_max_s`` are ``ClientSettings`` fields only), so the tests shorten it by
patching the resource module's ``ClientSettings``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli import main as cli_main
from mobile_status_dagster.cli.main import EXIT_USAGE
from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core import numbers
from mobile_status_dagster.core.client import ClientSettings
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration import resources
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.integration.sensors import NEW_SETS_SENSOR
from mobile_status_dagster.simulator import (
    DEMO_TOKEN,
    LedgerEntry,
    SimulatorConfig,
    SimulatorServer,
)
from tests.support import (
    asked,
    billed_twice,
    cli_env,
    one_run,
    query,
    requests_since,
    revoke_token_after,
    sample_numbers,
    seed_sets,
    truth,
)
from tests.warehouses import DuckDBWarehouse, Warehouse, run_sets

#: Seeds the simulator's answers and fault draws (one seed: one sequence of faults).
SEED = 3
MOBILE_RE = re.compile(r"1[3-9][0-9]{9}")
BILLED_CODES = tuple(s.value for s in Status if s.billed)

#: Everything a faulty run may have changed at the provider, back to a healthy provider.
HEALTHY: dict[str, Any] = {
    "http_500_rate": 0.0,
    "slow_rate": 0.0,
    "malformed_rate": 0.0,
    "internal_error_rate": 0.0,
    "operator_refused_rate": 0.0,
    "operator_timeout_rate": 0.0,
    "odd_code_rate": 0.0,
    "qps_limit": None,
    "balance": None,
    "token": DEMO_TOKEN,
    "latency_ms": 0,
}


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries after 0-50 ms instead of 0.2-10 s (the resource has no backoff setting)."""
    monkeypatch.setattr(
        resources,
        "ClientSettings",
        functools.partial(ClientSettings, backoff_initial_s=0.02, backoff_max_s=0.05),
    )


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """This module's simulator answers at once, with this module's seed."""
    return SimulatorConfig(latency_ms=0, seed=SEED)


# --- the sets -------------------------------------------------------------------------


def fault_sets() -> dict[str, list[str | None]]:
    """Two overlapping sets: 300 distinct numbers, a few messy spellings and rejects."""
    pool = sample_numbers(300, seed=41)
    a: list[str | None] = [*pool[:200], f"+86 {pool[0]}", "abc", None]
    b: list[str | None] = [*pool[150:], f"0086{pool[160]}", "12345"]
    return {"a": a, "b": b}


def valid_numbers(sets: Mapping[str, Sequence[str | None]]) -> set[str]:
    """The distinct numbers the rules accept (the scalar normalizer as the oracle)."""
    out = set()
    for rows in sets.values():
        for raw in rows:
            normalized = numbers.normalize(raw)
            if normalized.mobile is not None:
                out.add(normalized.mobile)
    return out


# --- reconciling the audit with the provider's ledger ------------------------------------


@dataclass(frozen=True)
class AuditRow:
    order_number: str | None
    mobile: str
    provider_code: int | None
    status_code: int | None
    operator: str | None
    billed: bool
    possibly_billed: bool
    http_status: int | None
    error: str | None
    run_id: str


def audit_rows(db: Warehouse) -> list[AuditRow]:
    rows = db.query(
        "SELECT order_number, mobile, provider_code, status_code, operator, billed, "
        "possibly_billed, http_status, error, run_id FROM provider_calls",
    )
    return [AuditRow(*row) for row in rows]


Kind = tuple[Any, ...]


def ledger_kind(entry: LedgerEntry) -> Kind:
    """What the client should have recorded for a request the provider saw."""
    if entry.code == 2000:
        # A slow answer was decided and billed, but arrives after the client's timeout.
        return ("lost",) if entry.fault == "slow" else ("answer", entry.order_number)
    if entry.code is not None:
        return ("code", entry.code)
    if entry.http_status == 500:
        return ("http", 500)
    assert entry.fault == "malformed", entry
    return ("malformed",)


def audit_kind(row: AuditRow) -> Kind:
    """What an audit row says the provider did."""
    if row.error in ("ResponseTimeoutError", "ConnectionLostError"):
        return ("lost",)
    if row.error == "ConnectFailedError":
        return ("never_sent",)
    if row.provider_code == 2000:
        return ("answer", row.order_number)
    if row.provider_code is not None:
        return ("code", row.provider_code)
    if row.http_status == 500:
        return ("http", 500)
    assert row.error == "MalformedResponseError", row
    return ("malformed",)


@dataclass
class Reconciled:
    """The ledger matched against the audit."""

    delivered: set[str] = field(default_factory=set)  # order numbers whose answer arrived
    undelivered_billed: list[LedgerEntry] = field(default_factory=list)


def reconcile(sim: SimulatorServer, db: Warehouse, *, server_restarted: bool = False) -> Reconciled:
    """Match every request the provider saw with the audit row the client wrote.

    Answers match by order number, with the same number, status, operator and billing.
    Provider codes, HTTP 500s and malformed bodies match per number. A request whose
    answer never arrived (a slow answer past the timeout) matches an audit row marked
    ``possibly_billed``. When the server went away mid-run, requests cut in flight may
    show as such rows too, and refused connections (never sent) have no ledger entry.
    """
    ledger = sim.provider.ledger()
    audit = audit_rows(db)
    by_order = {e.order_number: e for e in ledger if e.order_number is not None}
    result = Reconciled()
    for row in audit:
        # Possibly billed: exactly the attempts sent whose answer never arrived.
        assert row.possibly_billed == (audit_kind(row) == ("lost",)), row
        if row.possibly_billed:
            assert not row.billed
            assert row.order_number is None
        if row.order_number is not None:
            entry = by_order.get(row.order_number)
            assert entry is not None, f"audit row {row} has an order number the provider never gave"
            assert (row.mobile, row.status_code, row.operator, row.billed) == (
                entry.mobile,
                entry.check,
                entry.operator,
                entry.billed,
            )
            assert row.order_number not in result.delivered, "an answer is audited twice"
            result.delivered.add(row.order_number)
        elif row.billed:
            raise AssertionError(f"billed audit row without an order number: {row}")

    seen: dict[str, collections.Counter[Kind]] = collections.defaultdict(collections.Counter)
    for entry in ledger:
        assert entry.mobile is not None
        seen[entry.mobile][ledger_kind(entry)] += 1
    recorded: dict[str, collections.Counter[Kind]] = collections.defaultdict(collections.Counter)
    for row in audit:
        recorded[row.mobile][audit_kind(row)] += 1

    for mobile in set(seen) | set(recorded):
        saw, wrote = seen[mobile], recorded[mobile]
        never_sent = wrote.pop(("never_sent",), 0)
        if not server_restarted:
            assert never_sent == 0
            assert saw == wrote, f"{numbers.mask(mobile)}: provider saw {saw}, audit has {wrote}"
            continue
        # Requests cut in flight: the provider saw them (any outcome), the client recorded
        # a possibly billed attempt. Stale pooled connections add such rows the provider
        # never saw. Every other outcome the client recorded, the provider gave.
        cut = (saw - wrote) - collections.Counter({("lost",): saw[("lost",)]})
        answered = wrote - collections.Counter({("lost",): wrote[("lost",)]})
        assert not (answered - saw), f"{numbers.mask(mobile)}: audit {wrote} vs provider {saw}"
        assert cut.total() + saw[("lost",)] <= wrote[("lost",)], (mobile, saw, wrote)

    result.undelivered_billed = [
        e for e in ledger if e.billed and e.order_number not in result.delivered
    ]
    if not server_restarted:
        assert [e for e in result.undelivered_billed if e.fault != "slow"] == []

    # Every paid answer that arrived is in the cache (nothing billed is ever asked again,
    # so the billed answer is the number's latest).
    cache = dict(db.query("SELECT mobile, order_number FROM mobile_status_latest"))
    for entry in ledger:
        if entry.billed and entry.order_number in result.delivered:
            assert cache.get(entry.mobile) == entry.order_number, numbers.mask(entry.mobile)
    return result


def assert_journal_folded(db: Warehouse) -> None:
    """Every journal segment was folded into the store and deleted."""
    assert sorted(db.journal_dir.glob("*.jsonl")) == []


# --- outcomes -------------------------------------------------------------------------


def assert_defined_state(run: RunOutcome, fatal: Sequence[str] | None) -> None:
    """Success, or a failure that says what happened and what to do (never the token)."""
    if fatal is not None:
        assert not run.success, "a fatal provider error must fail the run"
    if run.success:
        assert run.message is None
        return
    message = run.message
    assert message is not None
    for text in (*(fatal or ("still have no answer",)), "not published", "rerun"):
        assert text in message, message
    assert DEMO_TOKEN not in message
    assert "Traceback" not in message


def assert_all_or_nothing(db: Warehouse, sets: Mapping[str, Sequence[str | None]]) -> None:
    """A partition is published whole (one row per input row) or not at all."""
    counts = dict(db.query("SELECT set_id, count(*) FROM mobile_status GROUP BY set_id"))
    for set_id, rows in sets.items():
        assert counts.get(set_id, 0) in (0, len(rows)), (set_id, counts)


def assert_complete(db: Warehouse, sets: Mapping[str, Sequence[str | None]]) -> None:
    """Every set published, every valid number with the provider's true answer, or with
    ``unknown`` where the operator refused it (5001) on every bounded retry, which the
    contract records as unknown (asked again next run, for free)."""
    cached_code = dict(db.query("SELECT mobile, provider_code FROM mobile_status_latest"))
    for set_id, rows in sets.items():
        table = db.query(
            "SELECT mobile, valid, status_code, invalid_reason, source FROM mobile_status "
            "WHERE set_id = ?",
            [set_id],
        )
        assert len(table) == len(rows), set_id
        for mobile, valid, status_code, reason, source in table:
            if valid:
                refused = status_code == Status.UNKNOWN and cached_code.get(mobile) == 5001
                assert status_code == truth(mobile, SEED) or refused, numbers.mask(mobile)
                assert source in ("provider", "cache")
            else:
                assert reason is not None
                assert source == "invalid"


# --- injecting faults mid-run -----------------------------------------------------------


MidRun = Callable[[SimulatorServer, pytest.MonkeyPatch], contextlib.AbstractContextManager[Any]]


@contextlib.contextmanager
def nothing(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield


def server_goes_away(after: int, down_s: float) -> MidRun:
    """A thread stops the server after ``after`` more requests and restarts it on the same
    port ``down_s`` later, cutting the requests in flight."""

    @contextlib.contextmanager
    def inject(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
        mark = len(sim.provider.ledger())
        finished = threading.Event()
        stopped: list[int] = []

        def act() -> None:
            while len(sim.provider.ledger()) - mark < after:
                if finished.wait(0.002):
                    return
            sim.stop()
            stopped.append(len(sim.provider.ledger()) - mark)
            time.sleep(down_s)  # fault injection: how long the provider is away
            sim.start()

        thread = threading.Thread(target=act, name="provider-goes-away", daemon=True)
        thread.start()
        try:
            yield stopped
        finally:
            finished.set()
            thread.join()
            assert sim.running
            assert stopped, "the run finished before the server could be stopped"

    return inject


# --- one fault at a time ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    provider: dict[str, Any]  # simulator settings during the faulty run
    happened: Callable[[list[LedgerEntry]], bool]
    api: dict[str, Any] = field(default_factory=dict)  # resource settings of the faulty run
    mid_run: MidRun = nothing
    fatal: tuple[str, ...] | None = None  # the run must fail, saying these
    server_restarted: bool = False


FAULTS = [
    Fault(
        "http-500",
        {"http_500_rate": 0.05},
        lambda ledger: sum(e.http_status == 500 for e in ledger) >= 5,
    ),
    Fault(
        "slow-answers-past-the-timeout",
        {"slow_rate": 0.02, "slow_ms": 1500},
        lambda ledger: any(e.fault == "slow" and e.billed for e in ledger),
        # Far from both the slow answers and a busy machine's ordinary ones: a healthy
        # request starved of CPU for the whole timeout would count as a late answer.
        api={"timeout_s": 0.9},
    ),
    Fault(
        "malformed-bodies",
        {"malformed_rate": 0.01},
        lambda ledger: any(e.fault == "malformed" for e in ledger),
    ),
    Fault(
        "qps-limit-4029",
        {"qps_limit": 150},
        lambda ledger: any(e.code == 4029 for e in ledger),
        api={"max_concurrency": 32},
    ),
    Fault(
        "operator-refused-and-timed-out-5001-5002",
        {"operator_refused_rate": 0.05, "operator_timeout_rate": 0.05},
        lambda ledger: {5001, 5002} <= {e.code for e in ledger},
    ),
    Fault(
        "balance-runs-out-4002",
        {"balance": 120},
        lambda ledger: any(e.code == 4002 for e in ledger),
        fatal=("4002", "Top up"),
    ),
    Fault(
        "token-revoked-4001",
        {},
        lambda ledger: any(e.code == 4001 for e in ledger),
        mid_run=lambda sim, _: revoke_token_after(sim, 100),
        fatal=("4001", settings.TOKEN),
    ),
    Fault(
        "server-goes-away-and-comes-back",
        {"latency_ms": 20},
        lambda ledger: True,  # server_goes_away asserts that it stopped the server
        api={"max_concurrency": 16},
        mid_run=server_goes_away(after=100, down_s=0.3),
        server_restarted=True,
    ),
]


def rerun_pays_only_for_what_was_missing(
    sim: SimulatorServer,
    db: Warehouse,
    sets: Mapping[str, Sequence[str | None]],
    instance: dg.DagsterInstance,
    *,
    server_restarted: bool,
) -> None:
    """Clear the faults, rerun, and check the bill across both runs."""
    before = reconcile(sim, db, server_restarted=server_restarted)
    paid = {
        e.mobile for e in sim.provider.ledger() if e.billed and e.order_number in before.delivered
    }
    sim.provider.update_config(**HEALTHY)
    mark = len(sim.provider.ledger())
    rerun = one_run(run_sets(sim, db, list(sets), instance=instance))
    assert rerun.success, rerun.message

    again = requests_since(sim, mark)
    assert asked(again) == sorted(valid_numbers(sets) - paid)
    assert all(e.code == 2000 for e in again)
    assert_complete(db, sets)
    after = reconcile(sim, db, server_restarted=server_restarted)
    assert after.undelivered_billed == before.undelivered_billed
    # Billed twice: exactly the numbers whose billed answer never reached the client.
    assert set(billed_twice(sim)) == {e.mobile for e in after.undelivered_billed}
    assert_journal_folded(db)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_provider_fault_keeps_every_paid_answer_and_a_rerun_completes_the_sets(
    simulator: SimulatorServer, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    sets = fault_sets()
    warehouse.seed_sets(sets)
    instance = dg.DagsterInstance.ephemeral()
    simulator.provider.update_config(**fault.provider)
    with fault.mid_run(simulator, monkeypatch):
        first = one_run(run_sets(simulator, warehouse, list(sets), instance=instance, **fault.api))

    ledger = simulator.provider.ledger()
    assert fault.happened(ledger), f"the fault {fault.name} was not injected"
    assert all(e.mobile is not None and MOBILE_RE.fullmatch(e.mobile) for e in ledger)
    assert_defined_state(first, fault.fatal)
    assert_all_or_nothing(warehouse, sets)
    assert_journal_folded(warehouse)
    reconciled = reconcile(simulator, warehouse, server_restarted=fault.server_restarted)
    possibly = warehouse.query("SELECT count(*) FROM provider_calls WHERE possibly_billed")[0][0]
    if fault.name.startswith("slow"):
        # The audit flags exactly the attempts whose (billed or unknown) answer was late.
        assert possibly == sum(e.fault == "slow" for e in ledger)
        assert reconciled.undelivered_billed
    elif not fault.server_restarted:
        assert possibly == 0
    if first.success:
        assert_complete(warehouse, sets)

    rerun_pays_only_for_what_was_missing(
        simulator, warehouse, sets, instance, server_restarted=fault.server_restarted
    )


# --- all faults together ------------------------------------------------------------------

TRANSIENT: dict[str, Any] = {
    "http_500_rate": 0.05,
    "malformed_rate": 0.01,
    "operator_refused_rate": 0.02,
    "operator_timeout_rate": 0.02,
    "slow_rate": 0.02,
    "slow_ms": 1000,
    "qps_limit": 300,
    "latency_ms": 10,
}


@pytest.mark.slow
def test_all_faults_together_lose_nothing_and_the_third_run_completes(
    simulator: SimulatorServer, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transient faults, a server restart and the balance running out; then the token
    revoked mid-run; then a healthy provider."""
    sets = fault_sets()
    warehouse.seed_sets(sets)
    instance = dg.DagsterInstance.ephemeral()
    api: dict[str, Any] = {"timeout_s": 0.3, "max_concurrency": 16}

    simulator.provider.update_config(**TRANSIENT, balance=150)
    with server_goes_away(after=60, down_s=0.2)(simulator, monkeypatch):
        first = one_run(run_sets(simulator, warehouse, list(sets), instance=instance, **api))
    assert_defined_state(first, ("4002", "Top up"))
    assert_all_or_nothing(warehouse, sets)
    reconcile(simulator, warehouse, server_restarted=True)
    ledger = simulator.provider.ledger()
    assert {4002, 5001, 5002} <= {e.code for e in ledger}
    assert {"http_500", "malformed", "slow"} <= {e.fault for e in ledger}

    simulator.provider.update_config(balance=None)
    with revoke_token_after(simulator, 80):
        second = one_run(run_sets(simulator, warehouse, list(sets), instance=instance, **api))
    assert_defined_state(second, ("4001", settings.TOKEN))
    assert_all_or_nothing(warehouse, sets)
    assert_journal_folded(warehouse)

    rerun_pays_only_for_what_was_missing(
        simulator, warehouse, sets, instance, server_restarted=True
    )


def test_provider_unreachable_for_the_whole_run_fails_saying_so(
    simulator: SimulatorServer, warehouse: Warehouse
) -> None:
    sets = fault_sets()
    warehouse.seed_sets(sets)
    simulator.stop()
    run = one_run(run_sets(simulator, warehouse, list(sets), max_retries=1))
    simulator.start()
    assert_defined_state(run, None)
    assert simulator.provider.ledger() == []
    assert warehouse.query("SELECT DISTINCT error FROM provider_calls") == [("ConnectFailedError",)]
    assert warehouse.query("SELECT count(*) FROM mobile_status") == [(0,)]


def test_provider_unreachable_failure_message_says_why(
    simulator: SimulatorServer, warehouse: Warehouse
) -> None:
    warehouse.seed_sets({"a": sample_numbers(20)})
    simulator.stop()
    run = one_run(run_sets(simulator, warehouse, ["a"], max_retries=0))
    simulator.start()
    assert not run.success
    assert run.message is not None
    assert "connect" in run.message.lower()
    assert settings.BASE_URL in run.message


# --- hostile input ------------------------------------------------------------------------


def _spellings(n: str) -> list[str]:
    wide = str.maketrans("0123456789+-()", "０１２３４５６７８９＋－（）")
    return [
        n,
        f"+86 {n[:3]}-{n[3:7]}-{n[7:]}",
        f"+86{n}",
        f"0086{n}",
        f"0086 {n}",
        f"86{n}",
        f"86 {n}",
        f"{n}.0",
        f"{n}.00",
        f"({n[:3]}) {n[3:7]} {n[7:]}",
        f"{n[:3]}.{n[3:7]}.{n[7:]}",
        f"{n[:3]}/{n[3:7]}/{n[7:]}",
        f"{n[:3]}\u2013{n[3:7]}\u2014{n[7:]}",
        f"\t{n} \n",
        f"\u00a0{n}\u3000",
        f"\u200b{n}\ufeff",
        f"+86 {n}".translate(wide),
        n.translate(wide),
    ]


def _never_valid(n: str) -> list[str]:
    """Inputs derived from a valid number that must be rejected."""
    return [
        n[:-1],  # 10 digits
        n + "0",  # 12 digits
        f"+1 {n}",
        f"+44{n}",
        f"0086{n}0",
        f"86{n}0",
        f"{n}.5",
        f"{n}e0",
        f"1.{n[1:]}e10",
        f"{n}📱",
        f"📱{n}",
        f"{n[:3]}a{n[4:]}",
        f"{n}'; DROP TABLE number_sets; --",
        f"{n}' OR '1'='1",
        f"{n}\x00",
        f"\x1b[31m{n}",
        n.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),  # Arabic-Indic digits
        n.translate(str.maketrans("0123456789", "०१२३४५६७८९")),  # Devanagari digits
        n.translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")),  # superscripts
        "0" + n[1:],
        "2" + n[1:],
        "12" + n[2:],
    ]


HOSTILE_CONSTANTS: list[str | None] = [
    None,
    "",
    " ",
    "\t\n\r",
    "\u3000\u00a0\u200b",
    "abc",
    "NULL",
    "null",
    "None",
    "NaN",
    "inf",
    "-13912345678",
    "010-12345678",
    "0755-8888-9999",
    "(021) 6123 4567",
    "+86 10 6552 9988",
    "400-820-8820",
    "95588",
    "110",
    "+",
    "00",
    "86",
    "+86",
    "0086",
    "1" * 10_240,
    "x" * 10_240,
    "13912345678" + " " * 10_000,
    "13912345678" * 931,
    "１" * 10_240,
    "'; DROP TABLE number_sets; --",
    "' OR 1=1 --",
    "1; DELETE FROM mobile_status_latest",
    "$$13912345678$$",
    "%s%s%s%n",
    "{mobile}",
    "\\x00",
    "\x00",
    "☎️",
    "📱📱📱",
    "👍🏽" * 11,
    "١٣٩١٢٣٤٥٦٧٨",
    "①③⑨①②③④⑤⑥⑦⑧",
]

HOSTILE_ROWS = 10_000


def hostile_rows() -> list[str | None]:
    """10,000 rows: every valid number in every spelling, repeatedly, among rejects."""
    valid = sample_numbers(400, seed=77)
    rows: list[str | None] = list(HOSTILE_CONSTANTS)
    for n in valid[:150]:
        rows += _never_valid(n)
    spellings = [s for n in valid for s in _spellings(n)]
    rows += spellings[: HOSTILE_ROWS - len(rows)]
    while len(rows) < HOSTILE_ROWS:  # more duplicates, in every spelling
        rows += spellings[: HOSTILE_ROWS - len(rows)]
    assert len(rows) == HOSTILE_ROWS
    return rows


@pytest.mark.slow
def test_ten_thousand_hostile_rows_are_normalized_or_rejected_and_nothing_invalid_is_sent(
    simulator: SimulatorServer, warehouse: Warehouse
) -> None:
    rows = [warehouse.storable(raw) for raw in hostile_rows()]
    expected = {raw: numbers.normalize(raw) for raw in rows if raw is not None}
    valid = {n.mobile for n in expected.values() if n.mobile is not None}
    assert 300 <= len(valid) <= 410  # the sample's numbers, each in many spellings
    warehouse.seed_sets({"hostile": rows})
    run = one_run(run_sets(simulator, warehouse, ["hostile"]))
    assert run.success, run.message

    ledger = simulator.provider.ledger()
    # Nothing that cannot be valid was sent; every valid number once, whatever its spellings.
    for entry in ledger:
        assert entry.mobile is not None
        assert MOBILE_RE.fullmatch(entry.mobile)
        assert numbers.normalize(entry.mobile).valid
    assert asked(ledger) == sorted(valid)
    assert 4003 not in {e.code for e in ledger}

    # One published row per input row, the raw value kept verbatim, each with its reason.
    published = warehouse.query(
        "SELECT mobile_raw, mobile, valid, invalid_reason, status_code FROM mobile_status"
    )
    assert len(published) == HOSTILE_ROWS
    assert collections.Counter(r[0] for r in published) == collections.Counter(rows)
    for raw, mobile, is_valid, reason, status_code in published:
        oracle = expected[raw] if raw is not None else numbers.normalize(None)
        assert (mobile, reason) == (oracle.mobile, oracle.reason), repr(raw)[:80]
        assert is_valid == oracle.valid
        if is_valid:
            assert status_code == truth(mobile, SEED)
        else:
            assert reason in numbers.INVALID_REASONS
    assert run.metadata["dagster/row_count"] == HOSTILE_ROWS
    assert run.metadata["mobile_status/invalid"] == sum(
        1 for raw in rows if not numbers.normalize(raw).valid
    )

    # The SQL-looking rows stayed data.
    assert warehouse.query("SELECT count(*) FROM number_sets") == [(HOSTILE_ROWS,)]
    assert {"number_sets", "mobile_status", "mobile_status_latest", "provider_calls"} <= (
        warehouse.tables()
    )


# --- unknown sets, missing tables and columns, hostile set ids -----------------------------


def _nothing_written(sim: SimulatorServer, db: Warehouse) -> None:
    assert sim.provider.ledger() == []
    tables = db.tables()
    for table in ("mobile_status", "provider_calls", "mobile_status_latest"):
        if table in tables:
            assert db.query(f"SELECT count(*) FROM {table}") == [(0,)], table
    assert_journal_folded(db)


MISSING_SOURCES: list[tuple[dict[str, Any], str, str]] = [
    ({"source_table": "phone_lists"}, "source_table", "phone_lists"),
    ({"source_table": "crm.number_sets"}, "source_table", "crm.number_sets"),
    ({"set_column": "list_id"}, "set_column", "list_id"),
]


@pytest.mark.parametrize(
    ("factory", "setting", "name"),
    MISSING_SOURCES,
    ids=[m[1] + "-" + m[2] for m in MISSING_SOURCES],
)
def test_factory_pointed_at_a_missing_table_or_column_fails_naming_it(
    simulator: SimulatorServer,
    warehouse: Warehouse,
    factory: dict[str, Any],
    setting: str,
    name: str,
) -> None:
    warehouse.seed_sets({"a": sample_numbers(20)})
    run = one_run(
        run_sets(simulator, warehouse, ["a"], built=build_mobile_status_assets(**factory))
    )
    assert not run.success
    assert run.message is not None
    assert setting in run.message
    assert repr(name) in run.message
    assert "Traceback" not in run.message
    _nothing_written(simulator, warehouse)


def test_sensor_over_a_missing_set_column_names_the_setting(db: Path) -> None:
    seed_sets(db, {"a": sample_numbers(3)})
    built = build_mobile_status_assets(set_column="list_id")
    duck = DuckDBResource(database=str(db))
    defs = dg.Definitions.merge(
        built.definitions,
        dg.Definitions(
            resources={"duckdb": duck, "mobile_status_api": dg.ResourceDefinition.none_resource()}
        ),
    )
    sensor = defs.resolve_sensor_def(NEW_SETS_SENSOR)
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"duckdb": duck}
    )
    with pytest.raises(ConfigurationError, match=r"set_column.*'list_id'"):
        sensor(context)


def test_unknown_set_id_through_dagster_fails_naming_it(
    simulator: SimulatorServer, warehouse: Warehouse
) -> None:
    warehouse.seed_sets({"real": sample_numbers(5)})
    instance = dg.DagsterInstance.ephemeral()
    run = one_run(run_sets(simulator, warehouse, ["o'brien; nope"], instance=instance))
    try:
        assert not run.success
        assert run.message is not None
        assert "o'brien; nope" in run.message
    finally:
        _nothing_written(simulator, warehouse)
        assert warehouse.query("SELECT count(*) FROM mobile_status") == [(0,)]


def _environ(environ: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.environ`` made ``environ`` (for in-process CLI calls)."""
    for name in set(os.environ) - set(environ):
        monkeypatch.delenv(name)
    for name, value in environ.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)


@pytest.fixture
def cli_environ(simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``os.environ`` made :func:`tests.support.cli_env` for in-process CLI calls; ``db``."""
    _environ(cli_env(simulator, db), monkeypatch)
    return db


@pytest.fixture
def cli_warehouse(
    simulator: SimulatorServer, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> Warehouse:
    """``os.environ`` pointing in-process CLI calls at ``simulator`` and ``warehouse``."""
    _environ(warehouse.cli_env(simulator), monkeypatch)
    return warehouse


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_set_ids_with_quotes_and_semicolons_through_the_cli(
    simulator: SimulatorServer,
    cli_warehouse: Warehouse,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    warehouse = cli_warehouse
    hostile = "o'brien\"; DROP TABLE number_sets; --"
    mobiles = sample_numbers(30, seed=5)
    source = tmp_path / "list.txt"
    source.write_text("\n".join(mobiles) + "\n", encoding="utf-8")
    code, out, _ = _cli(capsys, "load", str(source), "--set", hostile)
    assert code == 0
    assert "30 valid" in out

    code, out, err = _cli(capsys, "enrich", "--set", hostile, "--quiet")
    assert code == 0, err
    assert asked(simulator.provider.ledger()) == sorted(mobiles)
    assert warehouse.query("SELECT set_id, count(*) FROM mobile_status GROUP BY set_id") == [
        (hostile, 30)
    ]

    export = tmp_path / "out.csv"
    code, out, err = _cli(
        capsys, "export", "--set", hostile, "--status", "online", "--out", str(export)
    )
    assert code == 0, err
    online = sorted(m for m in mobiles if truth(m, SEED) == Status.ONLINE)
    with duckdb.connect() as conn:
        exported = conn.execute("SELECT * FROM read_csv(?, all_varchar = true)", [str(export)])
        assert sorted(row[0] for row in exported.fetchall() if row[0] in online) == online

    # An unknown set id that looks like SQL is refused by name; nothing is written.
    mark = len(simulator.provider.ledger())
    unknown = "x'); DELETE FROM mobile_status; --"
    code, _, err = _cli(capsys, "enrich", "--set", unknown, "--quiet")
    assert code == EXIT_USAGE
    line = _error_line(err)
    assert repr(unknown) in line
    assert "unknown set" in line
    assert len(simulator.provider.ledger()) == mark
    assert warehouse.query("SELECT count(*) FROM mobile_status") == [(30,)]
    assert warehouse.query("SELECT count(*) FROM number_sets") == [(30,)]


# --- bad configuration: refused before any provider call, naming the setting ---------------


CLI_BAD_SETTINGS: list[tuple[str, str | None]] = [
    (settings.BASE_URL, "not a url"),
    (settings.BASE_URL, "http://"),
    (settings.BASE_URL, None),
    (settings.TOKEN, ""),
    (settings.MAX_CONCURRENCY, "-4"),
    (settings.MAX_CONCURRENCY, "many"),
    (settings.UNIT_PRICE, "five fen"),
    (settings.UNIT_PRICE, "NaN"),
    (settings.TIMEOUT_S, "0"),
    (settings.QPS, "-1"),
]


@pytest.mark.parametrize(
    ("variable", "value"), CLI_BAD_SETTINGS, ids=[f"{v}={x!r}" for v, x in CLI_BAD_SETTINGS]
)
def test_cli_refuses_bad_settings_before_any_call_naming_the_variable(
    simulator: SimulatorServer,
    cli_environ: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str | None,
) -> None:
    db = cli_environ
    seed_sets(db, {"a": sample_numbers(10)})
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    code, out, err = _cli(capsys, "enrich", "--set", "a", "--quiet")
    assert code == EXIT_USAGE
    assert variable in _error_line(err)
    assert DEMO_TOKEN not in out + err
    assert simulator.provider.ledger() == []
    tables = {t for (t,) in query(db, "SELECT table_name FROM duckdb_tables()")}
    assert tables == {"number_sets"}  # refused before the run touched the database


RESOURCE_BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"token": ""}, "token"),
    ({"token": "has spaces in it"}, "token"),
    ({"base_url": "not a url"}, "base_url"),
    ({"base_url": "http://"}, "base_url"),
    ({"base_url": "http://127.0.0.1:1/?token=x"}, "base_url"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"max_retries": -1}, "max_retries"),
    ({"unit_price": "NaN"}, "unit_price"),
    ({"unit_price": "1,5"}, "unit_price"),
    ({"currency": " "}, "currency"),
    ({"timeout_s": float("nan")}, "timeout_s"),
]


@pytest.mark.parametrize(
    ("api", "setting"),
    RESOURCE_BAD_SETTINGS,
    ids=[",".join(f"{k}={v!r}" for k, v in api.items()) for api, _ in RESOURCE_BAD_SETTINGS],
)
def test_resource_refuses_bad_settings_before_any_call_naming_the_setting(
    simulator: SimulatorServer, db: Path, api: dict[str, Any], setting: str
) -> None:
    seed_sets(db, {"a": sample_numbers(10)})
    settings_: dict[str, Any] = {"base_url": simulator.base_url, "token": DEMO_TOKEN} | api
    run = one_run(
        materialize_sets(
            build_mobile_status_assets(),
            resources={
                "mobile_status_api": MobileStatusResource(**settings_),
                "duckdb": DuckDBResource(database=str(db)),
            },
            instance=dg.DagsterInstance.ephemeral(),
            set_ids=["a"],
            log_level="CRITICAL",
        )
    )
    assert not run.success
    assert run.message is not None
    assert run.message.startswith(f"{setting}:"), run.message
    assert DEMO_TOKEN not in run.message
    _nothing_written(simulator, DuckDBWarehouse(db))
