"""Materialization metadata: usage and cost, in the style of dagster-openai."""

from __future__ import annotations

from collections.abc import Mapping
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


def outcomes_markdown(outcomes: list[PartitionOutcome]) -> str:
    """A markdown table of partitions: rows, sources, billed, cost, published or not."""
    lines = [
        "| set | rows | invalid | cache | provider | billed | cost | published |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for o in outcomes:
        state = "yes" if o.published else f"no ({o.missing} missing)"
        lines.append(
            f"| {_md(o.set_id)} | {o.rows} | {o.invalid} | {o.from_cache} | {o.from_provider} "
            f"| {o.billed} | {o.cost} | {state} |"
        )
    return "\n".join(lines)


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
