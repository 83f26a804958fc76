"""``mobile-status enrich``: real Dagster runs over set partitions, then a summary."""

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from mobile_status_dagster.assets import build_mobile_status_assets
from mobile_status_dagster.definitions import default_resources
from mobile_status_dagster.errors import MobileStatusError
from mobile_status_dagster.runs import RunOutcome, cli_instance, materialize_sets
from mobile_status_dagster.settings import DeploymentSettings
from mobile_status_dagster.status import Status
from mobile_status_dagster.store.connection import file_connect
from mobile_status_dagster.store.reports import charges_for_runs, status_counts
from mobile_status_dagster.store.source import SourceTable, distinct_set_ids


class UnknownSetError(MobileStatusError):
    """A requested set id has no rows in the source table."""


@dataclass(frozen=True)
class EnrichOutcome:
    """The runs an ``enrich`` command started, over which sets."""

    set_ids: tuple[str, ...]
    runs: tuple[RunOutcome, ...]

    @property
    def success(self) -> bool:
        """Every run succeeded."""
        return all(run.success for run in self.runs)


def enrich_sets(
    deployment: DeploymentSettings,
    *,
    set_ids: Sequence[str] | None,
    all_sets: bool = False,
    force_refresh: bool = False,
    max_billed: int | None = None,
    log_level: str = "INFO",
) -> EnrichOutcome:
    """Materialize ``mobile_status`` for the sets (checked to exist first)."""
    with file_connect(deployment.db)() as conn:
        present = distinct_set_ids(conn, SourceTable())
    wanted = present if all_sets else list(dict.fromkeys(set_ids or []))
    unknown = [s for s in wanted if s not in set(present)]
    if unknown:
        known = ", ".join(present[:10]) or "none; load a file first"
        raise UnknownSetError(
            f"unknown set id(s) {', '.join(map(repr, unknown))} in {deployment.db} (known: {known})"
        )
    if not wanted:
        raise UnknownSetError(f"no sets in {deployment.db}; load a file first")
    runs = materialize_sets(
        build_mobile_status_assets(),
        resources=default_resources(deployment),
        instance=cli_instance(),
        set_ids=wanted,
        force_refresh=force_refresh,
        max_billed=max_billed,
        log_level=log_level,
    )
    return EnrichOutcome(tuple(wanted), tuple(runs))


def print_summary(db: str, outcome: EnrichOutcome) -> None:
    """Rows by set × status, by serving operator, and what the runs billed."""
    with file_connect(db)() as conn:
        counts = status_counts(conn, outcome.set_ids)
        charges = charges_for_runs(conn, [run.run_id for run in outcome.runs])
    statuses = [s.label for s in Status] + ["invalid"]
    print("   " + f"{'set':<16}" + "".join(f"{s:>12}" for s in statuses))
    for set_id in outcome.set_ids:
        per_status = collections.Counter({c.status: 0 for c in counts})
        for c in counts:
            if c.set_id == set_id:
                per_status[c.status] += c.rows
        print("   " + f"{set_id:<16}" + "".join(f"{per_status[s]:>12}" for s in statuses))
    operators: collections.Counter[str] = collections.Counter()
    for c in counts:
        if c.status != "invalid":
            operators[c.operator] += c.rows
    print("   serving operator: " + ", ".join(f"{op} {n}" for op, n in sorted(operators.items())))
    print(
        f"   provider calls: {charges.calls}, billed: {charges.billed}, "
        f"possibly billed: {charges.possibly_billed}, cost: {charges.cost:.2f} {charges.currency}"
    )
