"""What a run would cost, before spending anything: no provider call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.connection import Connect
from mobile_status_dagster.core.store.plan import RunPlan, plan_run
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, Tables, ensure_schema
from mobile_status_dagster.core.store.source import Partition, SourceTable


@dataclass(frozen=True)
class CostEstimate:
    """A run's plan and its upper-bound cost (unknown answers are not billed)."""

    plan: RunPlan
    unit_price: Decimal
    currency: str

    @property
    def estimated_cost(self) -> Decimal:
        """Numbers to send × unit price: what the run bills at most, retries aside."""
        return self.unit_price * self.plan.to_send


def estimate_cost(
    connect: Connect,
    source: SourceTable,
    partitions: Sequence[Partition],
    *,
    unit_price: Decimal,
    currency: str = "CNY",
    freshness: Freshness | None = None,
    force_refresh: bool = False,
    now: datetime | None = None,
    tables: Tables = DEFAULT_TABLES,
) -> CostEstimate:
    """Plan ``partitions`` exactly as a run would, and price it.

    Example::

        estimate = estimate_cost(file_connect("numbers.duckdb"), SourceTable(),
                                 [Partition("leads")], unit_price=Decimal("0.05"))
        print(estimate.plan.to_send, estimate.estimated_cost)
    """
    with connect() as conn:
        ensure_schema(conn, tables)
        source.check_exists(conn)
        plan = plan_run(
            conn,
            source,
            partitions,
            tables=tables,
            freshness=freshness or Freshness(),
            now=now or datetime.now(UTC),
            force_refresh=force_refresh,
        )
    return CostEstimate(plan=plan, unit_price=unit_price, currency=currency)
