"""Launching real Dagster materializations of set partitions (the CLI's and the demo's path)."""

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

import dagster as dg

# dg.materialize takes one partition key; a range is these tags, which have no public name.
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from mobile_status_dagster.core import errors
from mobile_status_dagster.core.errors import ErrorCategory
from mobile_status_dagster.integration.assets import MobileStatusAssets
from mobile_status_dagster.integration.metadata import FAILURE_CATEGORY, MobileStatusMetadataSet


@dataclass(frozen=True)
class RunOutcome:
    """One Dagster run over a contiguous range of set partitions."""

    run_id: str
    set_ids: tuple[str, ...]
    success: bool
    message: str | None
    metadata: Mapping[str, Any]
    """The first partition's metadata, as plain values."""
    usage: MobileStatusMetadataSet = field(default_factory=MobileStatusMetadataSet)
    """The same metadata's ``mobile_status/…`` figures, typed."""
    category: ErrorCategory | None = None
    """Why the run failed (``None`` when it succeeded): input, provider, store, …"""


def cli_instance() -> dg.DagsterInstance:
    """The instance at ``$DAGSTER_HOME``, or an ephemeral one when it is unset."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def register_sets(
    instance: dg.DagsterInstance, partitions_name: str, set_ids: Sequence[str]
) -> None:
    """Add the set partitions the instance does not know yet, in order."""
    known = set(instance.get_dynamic_partitions(partitions_name))
    new = [key for key in dict.fromkeys(set_ids) if key not in known]
    if new:
        instance.add_dynamic_partitions(partitions_name, new)


def contiguous_ranges(ordered_keys: Sequence[str], wanted: Sequence[str]) -> list[tuple[str, ...]]:
    """Group ``wanted`` into runs of keys adjacent in ``ordered_keys``.

    Dagster runs cover a partition range; sets that are adjacent in the partition
    order share one run (one client, one rate limiter, de-duplicated numbers).
    """
    chosen = set(wanted)
    groups: list[list[str]] = []
    previous_chosen = False
    for key in ordered_keys:
        if key in chosen:
            if previous_chosen:
                groups[-1].append(key)
            else:
                groups.append([key])
        previous_chosen = key in chosen
    return [tuple(group) for group in groups]


def materialize_sets(
    built: MobileStatusAssets,
    *,
    resources: Mapping[str, Any],
    instance: dg.DagsterInstance,
    set_ids: Sequence[str],
    force_refresh: bool = False,
    max_billed: int | None = None,
    log_level: str = "INFO",
) -> list[RunOutcome]:
    """Materialize ``mobile_status`` for ``set_ids``: one run per contiguous range of sets.

    Each run also rebuilds the summary and the charges and runs the asset checks, as
    the automation does after a materialization in a deployment.
    """
    assert isinstance(built.partitions_def, dg.DynamicPartitionsDefinition)
    name = built.partitions_def.name
    assert name is not None
    register_sets(instance, name, set_ids)
    ordered = instance.get_dynamic_partitions(name)
    run_config = {
        "ops": {
            built.enrichment.op.name: {
                "config": {"force_refresh": force_refresh, "max_billed": max_billed}
            }
        },
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    outcomes = []
    for group in contiguous_ranges(ordered, set_ids):
        tags = {ASSET_PARTITION_RANGE_START_TAG: group[0], ASSET_PARTITION_RANGE_END_TAG: group[-1]}
        result = dg.materialize(
            [built.enrichment, *built.reporting, *built.checks],
            instance=instance,
            resources=resources,
            run_config=run_config,
            tags=tags,
            raise_on_error=False,
        )
        events = [
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key == built.enrichment.key
        ]
        raw = events[0].materialization.metadata if events else {}
        message, category = (None, None) if result.success else _failure(result)
        outcomes.append(
            RunOutcome(
                result.run_id,
                group,
                result.success,
                message,
                {k: v.value for k, v in raw.items()},
                MobileStatusMetadataSet.extract(raw),
                category,
            )
        )
    return outcomes


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, ErrorCategory]:
    """The most specific reason a run failed and its category.

    A step's failure first (the asset's ``dg.Failure`` carries its category in the
    metadata), else any error event's (e.g. a resource that failed to initialize).
    """
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            user = event.step_failure_data.user_failure_data
            if user is not None and user.description:
                entry = user.metadata.get(FAILURE_CATEGORY)
                category = entry.value if entry is not None else None
                return user.description, _category(category)
            if event.step_failure_data.error is not None:
                return _innermost(event.step_failure_data.error)
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return _innermost(error)
    return "the run failed; see the Dagster event log", "unfinished"


INTERRUPTED = (
    "the run was interrupted (SIGTERM or Ctrl-C); every answer received so far is kept "
    "in the cache and the audit; rerun to finish, paying only for what is missing"
)


def _innermost(error: Any) -> tuple[str, ErrorCategory]:
    while getattr(error, "cause", None) is not None:
        error = error.cause
    name = getattr(error, "cls_name", None)
    if name == "DagsterExecutionInterruptedError":
        return INTERRUPTED, "interrupted"
    # An error of ours, by the class Dagster serialized it with.
    raised = getattr(errors, str(name), None)
    category: ErrorCategory = "unfinished"
    if isinstance(raised, type) and issubclass(raised, errors.MobileStatusError):
        category = raised.category
    # Dagster's message reads "package.module.ErrorClass: text"; keep the text.
    return re.sub(r"^[\w.]+: ", "", str(error.message).strip()), category


def _category(value: object) -> ErrorCategory:
    for category in get_args(ErrorCategory):
        if value == category:
            return cast(ErrorCategory, category)
    return "unfinished"
