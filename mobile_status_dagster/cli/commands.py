"""What the ``mobile-status`` data commands do: enrich, plan, report, export."""

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.runs import RunOutcome, cli_instance, materialize_sets
from mobile_status_dagster.core.engine.estimate import CostEstimate
from mobile_status_dagster.core.errors import UnknownSetError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.reports import Charges, StatusCount
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.integration.definitions import default_resources, store_resource_key
from mobile_status_dagster.integration.environment import DeploymentSettings
from mobile_status_dagster.integration.store_access import (
    DuckDBAccess,
    PostgresAccess,
    StoreAccess,
)

STATUS_COLUMNS = (*(s.label for s in Status), "invalid")


def printable(value: object) -> str:
    r"""``value`` as text that is safe to print on a terminal.

    Every character that is not printable is replaced by its backslash escape: C0 and C1
    controls (the ESC of an ANSI sequence, CR, LF, TAB, NUL, DEL, ...) become ``\x1b``,
    ``\r``, ``\n``, ``\t``, ``\x00``, ``\x7f``; Unicode format characters (bidi
    overrides such as U+202E), line and paragraph separators, unassigned code points and
    non-ASCII spaces become ``\u202e`` and the like. Everything the commands print from
    data (set ids, operators, statuses, currencies, run messages, file names) goes
    through here.

    Example::

        assert printable("\x1b[31mCM\r\n") == r"\x1b[31mCM\r\n"
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def _escaped(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class EnrichOutcome:
    """The runs an ``enrich`` command started, over which sets."""

    set_ids: tuple[str, ...]
    runs: tuple[RunOutcome, ...]

    @property
    def success(self) -> bool:
        """Every run succeeded."""
        return all(run.success for run in self.runs)


Store = str | StoreAccess
"""A DuckDB file's path, or a store (DuckDB or PostgreSQL)."""


def store_of(deployment: DeploymentSettings) -> StoreAccess:
    """The store of the deployment: its PostgreSQL database, else its DuckDB file."""
    target = deployment.postgres
    if target is not None:
        return PostgresAccess(target)
    return DuckDBAccess(DuckDBResource(database=deployment.db))


def _access(store: Store) -> StoreAccess:
    return DuckDBAccess(DuckDBResource(database=store)) if isinstance(store, str) else store


def require_database(store: Store) -> None:
    """Refuse to create an empty DuckDB database where the user expects data."""
    access = _access(store)
    if not isinstance(access, DuckDBAccess):
        return
    db = access.shown
    if db != ":memory:" and not Path(db).is_file():
        raise UnknownSetError(
            f"database {printable(db)} does not exist; load a file first (or set --db)"
        )


def resolve_sets(store: Store, set_ids: Sequence[str] | None, *, all_sets: bool) -> list[str]:
    """The requested sets, checked against the source table (``--all``: every set)."""
    access = _access(store)
    db = access.shown
    require_database(access)
    with access.reads() as reads:
        present = reads.distinct_set_ids(SourceTable())
    wanted = present if all_sets else list(dict.fromkeys(set_ids or []))
    known = set(present)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        listed = ", ".join(map(printable, present[:10])) or "none; load a file first"
        raise UnknownSetError(
            f"unknown set id(s) {', '.join(printable(repr(s)) for s in unknown)} "
            f"in {printable(db)} (known: {listed})"
        )
    if not wanted:
        raise UnknownSetError(f"no sets in {printable(db)}; load a file first")
    return wanted


def enrich_sets(
    deployment: DeploymentSettings,
    *,
    set_ids: Sequence[str] | None,
    all_sets: bool = False,
    force_refresh: bool = False,
    max_billed: int | None = None,
    log_level: str = "INFO",
) -> EnrichOutcome:
    """Materialize ``mobile_status`` for the sets (checked to exist first).

    A PostgreSQL store is ``$MOBILE_STATUS_STORE``, as in the default definitions.
    """
    wanted = resolve_sets(store_of(deployment), set_ids, all_sets=all_sets)
    runs = materialize_sets(
        build_mobile_status_assets(duckdb_resource_key=store_resource_key(deployment)),
        resources=default_resources(deployment),
        instance=cli_instance(),
        set_ids=wanted,
        force_refresh=force_refresh,
        max_billed=max_billed,
        log_level=log_level,
    )
    return EnrichOutcome(tuple(wanted), tuple(runs))


def plan_sets(
    deployment: DeploymentSettings,
    *,
    set_ids: Sequence[str] | None,
    all_sets: bool = False,
    force_refresh: bool = False,
) -> CostEstimate:
    """What enriching the sets would send and cost; no provider call."""
    store = store_of(deployment)
    wanted = resolve_sets(store, set_ids, all_sets=all_sets)
    with store.reads() as reads:
        plan = reads.plan(
            SourceTable(),
            [Partition(key) for key in wanted],
            tables=DEFAULT_TABLES,
            freshness=Freshness(),
            now=datetime.now(UTC),
            force_refresh=force_refresh,
        )
    return CostEstimate(plan=plan, unit_price=Decimal(deployment.unit_price), currency="CNY")


def print_plan(estimate: CostEstimate) -> None:
    """The plan as a table, and the estimate."""
    header = ("set", "rows", "invalid", "numbers", "from cache", "to send")
    print("   " + f"{header[0]:<16}" + "".join(f"{h:>12}" for h in header[1:]))
    for s in estimate.plan.sets:
        cells = (s.rows, s.invalid, s.distinct_valid, s.fresh, s.to_send)
        print("   " + f"{printable(s.set_id):<16}" + "".join(f"{c:>12}" for c in cells))
    print(
        f"   to send (de-duplicated across sets): {estimate.plan.to_send}; estimated cost at most "
        f"{money(estimate.estimated_cost)} {printable(estimate.currency)} "
        f"({estimate.unit_price} per billed call; unknown answers are free)"
    )


def print_summary(store: Store, outcome: EnrichOutcome) -> None:
    """Rows by set × status, by serving operator, and what the runs billed."""
    with _access(store).reads() as reads:
        counts = reads.status_counts(outcome.set_ids, tables=DEFAULT_TABLES)
        charges = reads.charges_for_runs(
            [run.run_id for run in outcome.runs], tables=DEFAULT_TABLES
        )
    _print_statuses(outcome.set_ids, counts)
    for c in charges or [Charges(0, 0, 0, Decimal(0), "")]:
        print(
            f"   provider calls: {c.calls}, billed: {c.billed}, "
            f"possibly billed: {c.possibly_billed}, cost: {money(c.cost)} "
            f"{printable(c.currency)}".rstrip()
        )


def print_report(store: Store, set_ids: Sequence[str] | None) -> None:
    """The status and operator summary of published sets, and their charges."""
    access = _access(store)
    require_database(access)
    with access.reads() as reads:
        wanted = list(set_ids) if set_ids else reads.published_set_ids(tables=DEFAULT_TABLES)
        if not wanted:
            raise UnknownSetError(
                f"nothing published in {printable(access.shown)} yet; enrich a set first"
            )
        counts = reads.status_counts(wanted, tables=DEFAULT_TABLES)
        charges = reads.charges_by_set(wanted, tables=DEFAULT_TABLES)
    print("status by set:")
    _print_statuses(wanted, counts)
    print("charges by set (all runs):")
    print(f"   {'set':<16}{'calls':>10}{'billed':>10}{'possibly':>10}{'cost':>16}")
    for set_id, c in charges:
        print(
            f"   {printable(set_id):<16}{c.calls:>10}{c.billed:>10}{c.possibly_billed:>10}"
            f"{f'{money(c.cost)} {printable(c.currency)}':>16}"
        )


def export(store: Store, set_id: str, statuses: Sequence[Status], out: Path) -> int:
    """Write the set's numbers with ``statuses`` to ``out``; the count written."""
    access = _access(store)
    require_database(access)
    return access.export_set(set_id, statuses, out, tables=DEFAULT_TABLES)


def money(amount: Decimal) -> str:
    """An exact amount with at least two decimals: 148.50, 0.1125."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        exact = exact.quantize(Decimal("0.01"))
    return f"{exact:f}"


def _print_statuses(set_ids: Sequence[str], counts: Sequence[StatusCount]) -> None:
    """Rows by set × status (the known status columns) and by serving operator; every
    value from the database goes through :func:`printable`."""
    by_set: dict[str, collections.Counter[str]] = {s: collections.Counter() for s in set_ids}
    operators: collections.Counter[str] = collections.Counter()
    for c in counts:
        by_set.setdefault(c.set_id, collections.Counter())[c.status] += c.rows
        if c.status != "invalid":
            operators[c.operator] += c.rows
    print("   " + f"{'set':<16}" + "".join(f"{s:>12}" for s in STATUS_COLUMNS))
    for set_id, per_status in by_set.items():
        shown = printable(set_id)
        if not per_status:
            print("   " + f"{shown:<16}" + "  (not published)")
            continue
        print("   " + f"{shown:<16}" + "".join(f"{per_status[s]:>12}" for s in STATUS_COLUMNS))
        other = sorted(set(per_status) - set(STATUS_COLUMNS))
        if other:  # a status this version does not know: shown, never dropped silently
            shown_other = ", ".join(f"{printable(s)} {per_status[s]}" for s in other)
            print(f"   {'':<16}  other statuses: {shown_other}")
    print(
        "   serving operator: "
        + ", ".join(f"{printable(op)} {n}" for op, n in sorted(operators.items()))
    )
