"""Materialization metadata: usage and cost, in the style of dagster-openai and dlt.

Keys are namespaced ``mobile_status/…`` (a :class:`MobileStatusMetadataSet`), beside
Dagster's own ``dagster/row_count``, ``dagster/table_name`` and
``dagster/column_schema``. Every figure is a number, so the UI plots it across
materializations; money is a float with its currency under a separate key (the exact
amounts are the ``DECIMAL`` columns of the tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import dagster as dg

# No public import path (dagster-dlt uses the same class, from the same module).
from dagster._core.definitions.metadata.metadata_set import NamespacedMetadataSet

from mobile_status_dagster.core.engine import EnrichmentReport
from mobile_status_dagster.core.store.publish import PartitionOutcome

NAMESPACE = "mobile_status"
FAILURE_CATEGORY = f"{NAMESPACE}/failure_category"
"""On a failed run's ``dg.Failure``: input, provider, store, interrupted or unfinished."""


class MobileStatusMetadataSet(NamespacedMetadataSet):
    """The ``mobile_status/…`` metadata of a ``mobile_status`` materialization.

    A partition's own figures: ``numbers`` (distinct valid numbers), ``invalid``,
    ``served_from_cache``, ``sent_to_provider``, ``billed``, ``possibly_billed``,
    ``cost`` and ``currency``, ``status_histogram``, ``operator_histogram``, ``ported``.
    ``billed`` and ``cost`` are the calls charged to the partition: a number shared with
    another partition of the run is charged to the first of them (by key).

    The run's figures, the same on every partition of the run (``run_*``, speed,
    latency): numbers shared by several partitions are sent and billed once.

    Read them back with ``MobileStatusMetadataSet.extract(materialization.metadata)``.
    """

    numbers: int | None = None
    invalid: int | None = None
    served_from_cache: int | None = None
    sent_to_provider: int | None = None
    billed: int | None = None
    possibly_billed: int | None = None
    cost: float | None = None
    currency: str | None = None
    status_histogram: dg.JsonMetadataValue | None = None
    operator_histogram: dg.JsonMetadataValue | None = None
    ported: int | None = None
    run_sent_to_provider: int | None = None
    run_attempts: int | None = None
    run_billed: int | None = None
    run_possibly_billed: int | None = None
    run_cost: float | None = None
    run_status_histogram: dg.JsonMetadataValue | None = None
    calls_per_second: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    run_wait_seconds: float | None = None
    run_recover_seconds: float | None = None
    run_plan_seconds: float | None = None
    run_check_seconds: float | None = None
    run_publish_seconds: float | None = None
    partitions: dg.MarkdownMetadataValue | None = None

    @classmethod
    def namespace(cls) -> str:
        """``mobile_status``."""
        return NAMESPACE


def published_column_schema() -> dg.TableSchema:
    """The columns of the published table, for ``dagster/column_schema``."""
    columns = (
        ("set_id", "VARCHAR", "the partition (set id) the row belongs to"),
        ("mobile_raw", "VARCHAR", "the number as it is in the source table"),
        ("mobile", "VARCHAR", "the normalized 11-digit number, NULL when invalid"),
        ("valid", "BOOLEAN", "our rules accept the number and the provider did not reject it"),
        ("invalid_reason", "VARCHAR", "why not: empty, not_digits, …, provider_rejected"),
        ("status_code", "TINYINT", "the provider's status, 0-5"),
        ("status", "VARCHAR", "unknown, online, powered_off, unavailable, vacant, cancelled"),
        ("operator", "VARCHAR", "the serving operator the provider reports (CM, CU, CT)"),
        ("prefix_operator", "VARCHAR", "the operator of the number's segment (CM … VNO)"),
        ("ported", "BOOLEAN", "the serving operator differs from the segment's network"),
        ("order_number", "VARCHAR", "the provider's order number of the answer"),
        ("checked_at", "TIMESTAMPTZ", "when the provider answered"),
        ("source", "VARCHAR", "provider (this run), cache or invalid"),
        ("run_id", "VARCHAR", "the run that published the row"),
    )
    return dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description) for name, kind, description in columns]
    )


def run_metadata(report: EnrichmentReport) -> dict[str, Any]:
    """The run's usage, identical on every partition it materializes."""
    latency = {f"latency_p{q}_ms": report.latencies.percentile(q) for q in (50, 95)}
    figures = MobileStatusMetadataSet(
        run_sent_to_provider=report.sent,
        run_attempts=report.attempts,
        run_billed=report.billed,
        run_possibly_billed=report.possibly_billed,
        run_cost=float(report.cost),
        currency=report.currency,
        run_status_histogram=dg.MetadataValue.json(_sorted(report.by_status)),
        calls_per_second=round(report.calls_per_s, 1),
        latency_p50_ms=_rounded(latency["latency_p50_ms"]),
        latency_p95_ms=_rounded(latency["latency_p95_ms"]),
        run_wait_seconds=_phase(report, "wait"),
        run_recover_seconds=_phase(report, "recover"),
        run_plan_seconds=_phase(report, "plan"),
        run_check_seconds=_phase(report, "check"),
        run_publish_seconds=_phase(report, "publish"),
        partitions=(
            dg.MetadataValue.md(outcomes_markdown(report.outcomes))
            if len(report.outcomes) > 1 or report.unfinished
            else None
        ),
    )
    return dict(figures)


def _phase(report: EnrichmentReport, phase: str) -> float | None:
    """Seconds the run spent in ``phase`` (``EnrichmentReport.phase_s``), if it ran."""
    seconds = report.phase_s.get(phase)
    return None if seconds is None else round(seconds, 3)


def failure_metadata(report: EnrichmentReport) -> dict[str, Any]:
    """A failed run's usage (:func:`run_metadata`) and its failure category."""
    return {**run_metadata(report), FAILURE_CATEGORY: report.category or "unfinished"}


def partition_metadata(outcome: PartitionOutcome, report: EnrichmentReport) -> dict[str, Any]:
    """One partition's own counts and money, then the run's usage (:func:`run_metadata`)."""
    own = MobileStatusMetadataSet(
        numbers=outcome.numbers,
        invalid=outcome.invalid,
        served_from_cache=outcome.from_cache,
        sent_to_provider=outcome.sent,
        billed=outcome.billed,
        possibly_billed=outcome.possibly_billed,
        cost=float(outcome.cost),
        status_histogram=dg.MetadataValue.json(_sorted(outcome.by_status)),
        operator_histogram=dg.MetadataValue.json(_sorted(outcome.by_operator)),
        ported=outcome.ported,
    )
    return {"dagster/row_count": outcome.rows, **dict(own), **run_metadata(report)}


def summary_metadata(per_set: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    """``mobile_status_summary``: how many sets, and a markdown table of sets × statuses.

    ``per_set`` rows are ``(set_id, status, numbers)``.
    """
    statuses = sorted({status for _, status, _ in per_set})
    counts = {(set_id, status): numbers for set_id, status, numbers in per_set}
    sets = sorted({set_id for set_id, _, _ in per_set})
    table = markdown_table(
        ("set", *statuses), ((s, *(counts.get((s, st), 0) for st in statuses)) for s in sets)
    )
    return {
        f"{NAMESPACE}/sets": len(sets),
        f"{NAMESPACE}/by_set_and_status": dg.MetadataValue.md(table),
    }


def charges_metadata(totals: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """``mobile_status_charges`` totals: calls, billed calls, and cost per currency.

    ``totals`` rows are ``(currency, calls, billed_calls, cost)``. With one currency the
    cost is also a float under ``mobile_status/cost`` beside ``mobile_status/currency``.
    """
    metadata: dict[str, Any] = {
        f"{NAMESPACE}/calls": sum(int(row[1]) for row in totals),
        f"{NAMESPACE}/billed": sum(int(row[2]) for row in totals),
        f"{NAMESPACE}/totals": dg.MetadataValue.md(
            markdown_table(("currency", "calls", "billed", "cost"), totals)
        ),
    }
    if len(totals) == 1:
        metadata[f"{NAMESPACE}/cost"] = float(totals[0][3])
        metadata[f"{NAMESPACE}/currency"] = str(totals[0][0])
    return metadata


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table; numbers right-aligned, text escaped."""
    body = [list(r) for r in rows]
    numeric = [
        all(isinstance(r[i], int | float | Decimal) for r in body) for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(_md(str(h)) for h in header) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(_md(str(cell)) for cell in row) + " |" for row in body]
    return "\n".join(lines)


def outcomes_markdown(outcomes: list[PartitionOutcome]) -> str:
    """A markdown table of partitions: rows, sources, billed, cost, published or not."""
    header = ("set", "rows", "invalid", "cache", "provider", "billed", "cost", "published")
    return markdown_table(
        header,
        (
            (
                o.set_id,
                o.rows,
                o.invalid,
                o.from_cache,
                o.from_provider,
                o.billed,
                o.cost,
                "yes" if o.published else f"no ({o.missing} missing)",
            )
            for o in outcomes
        ),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
