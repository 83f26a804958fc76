"""Materialization metadata: usage and cost, in the style of dagster-openai."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import dagster as dg

from mobile_status_dagster.engine import EnrichmentReport
from mobile_status_dagster.store.publish import PartitionOutcome


def run_metadata(report: EnrichmentReport) -> dict[str, Any]:
    """The run's usage, identical on every partition it materializes.

    ``run_*`` keys count the whole run (numbers shared by several partitions are sent
    and billed once); speed and latency are the run's.
    """
    metadata: dict[str, Any] = {
        "run_sent_to_provider": dg.MetadataValue.int(report.sent),
        "run_attempts": dg.MetadataValue.int(report.attempts),
        "run_billed": dg.MetadataValue.int(report.billed),
        "run_possibly_billed": dg.MetadataValue.int(report.possibly_billed),
        "run_cost": dg.MetadataValue.text(f"{report.cost} {report.currency}"),
        "run_status_histogram": dg.MetadataValue.json(_sorted(report.by_status)),
        "calls_per_second": dg.MetadataValue.float(round(report.calls_per_s, 1)),
    }
    for q in (50, 95):
        value = report.latencies.percentile(q)
        if value is not None:
            metadata[f"latency_p{q}_ms"] = dg.MetadataValue.float(round(value, 1))
    if len(report.outcomes) > 1 or report.unfinished:
        metadata["partitions"] = dg.MetadataValue.md(outcomes_markdown(report.outcomes))
    return metadata


def partition_metadata(outcome: PartitionOutcome, report: EnrichmentReport) -> dict[str, Any]:
    """One partition's own counts and money, then the run's usage (:func:`run_metadata`).

    ``billed`` and ``cost`` are the calls charged to this partition: a number shared
    with another partition of the run is charged to the first of them (by key).
    """
    return {
        "dagster/row_count": dg.MetadataValue.int(outcome.rows),
        "numbers": dg.MetadataValue.int(outcome.numbers),
        "invalid": dg.MetadataValue.int(outcome.invalid),
        "served_from_cache": dg.MetadataValue.int(outcome.from_cache),
        "sent_to_provider": dg.MetadataValue.int(outcome.sent),
        "billed": dg.MetadataValue.int(outcome.billed),
        "possibly_billed": dg.MetadataValue.int(outcome.possibly_billed),
        "cost": dg.MetadataValue.text(f"{outcome.cost} {report.currency}"),
        "status_histogram": dg.MetadataValue.json(_sorted(outcome.by_status)),
        "operator_histogram": dg.MetadataValue.json(_sorted(outcome.by_operator)),
        "ported": dg.MetadataValue.int(outcome.ported),
        **run_metadata(report),
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
