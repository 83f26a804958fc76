"""Materialization metadata: usage and cost, in the style of dagster-openai."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import dagster as dg

from mobile_status_dagster.engine import EnrichmentReport
from mobile_status_dagster.store.publish import PartitionOutcome


def run_metadata(report: EnrichmentReport) -> dict[str, Any]:
    """Metadata for a ``mobile_status`` materialization: counts, calls, money, speed."""
    published = [o for o in report.outcomes if o.published]
    rows = sum(o.rows for o in published)
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "numbers": dg.MetadataValue.int(sum(p.rows for p in report.plan.sets)),
        "invalid": dg.MetadataValue.int(sum(p.invalid for p in report.plan.sets)),
        "served_from_cache": dg.MetadataValue.int(sum(o.from_cache for o in published)),
        "sent_to_provider": dg.MetadataValue.int(report.sent),
        "attempts": dg.MetadataValue.int(report.attempts),
        "billed": dg.MetadataValue.int(report.billed),
        "possibly_billed": dg.MetadataValue.int(report.possibly_billed),
        "cost": dg.MetadataValue.text(f"{report.cost} {report.currency}"),
        "status_histogram": dg.MetadataValue.json(dict(sorted(report.by_status.items()))),
        "calls_per_second": dg.MetadataValue.float(round(report.calls_per_s, 1)),
    }
    for q in (50, 95):
        value = report.latencies.percentile(q)
        if value is not None:
            metadata[f"latency_p{q}_ms"] = dg.MetadataValue.float(round(value, 1))
    if len(report.outcomes) > 1 or report.unfinished:
        metadata["partitions"] = dg.MetadataValue.md(outcomes_markdown(report.outcomes))
    return metadata


def partition_metadata(outcome: PartitionOutcome, currency: str) -> dict[str, Any]:
    """Metadata for one partition of a multi-partition run."""
    return {
        "dagster/row_count": dg.MetadataValue.int(outcome.rows),
        "invalid": dg.MetadataValue.int(outcome.invalid),
        "served_from_cache": dg.MetadataValue.int(outcome.from_cache),
        "from_provider": dg.MetadataValue.int(outcome.from_provider),
        "billed": dg.MetadataValue.int(outcome.billed),
        "cost": dg.MetadataValue.text(f"{outcome.cost} {currency}"),
        "status_histogram": dg.MetadataValue.json(_sorted(outcome.by_status)),
        "operator_histogram": dg.MetadataValue.json(_sorted(outcome.by_operator)),
        "ported": dg.MetadataValue.int(outcome.ported),
    }


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


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
