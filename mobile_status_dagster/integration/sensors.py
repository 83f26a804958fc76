"""The sensor that adds a partition for every set id that appears in the source table."""

import dagster as dg

from mobile_status_dagster.core.store.source import SourceTable
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.store_access import store_access

NEW_SETS_SENSOR = MobileStatusNames().new_sets_sensor


def build_new_sets_sensor(
    source: SourceTable,
    partitions_def: dg.DynamicPartitionsDefinition,
    *,
    name: str = NEW_SETS_SENSOR,
    duckdb_resource_key: str = "duckdb",
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    """A sensor adding a dynamic partition per new set id in ``source``.

    It only registers partitions: enriching a set costs money, so runs are started by
    a person, a backfill, or the (stopped by default) schedule (see the README).
    """
    if partitions_def.name is None:
        raise dg.DagsterInvalidDefinitionError("the set partitions definition needs a name")
    partitions_name = partitions_def.name

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={duckdb_resource_key},
        description=(
            f"Adds a {partitions_name!r} partition for each new set id in {source.table!r}."
        ),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def new_sets(context: dg.SensorEvaluationContext, **_resources: object) -> dg.SensorResult:
        # Direct invocation (sensor(context)) also passes the resources as keywords.
        with store_access(context.resources, duckdb_resource_key).reads() as reads:
            found = reads.distinct_set_ids(source)
        known = set(context.instance.get_dynamic_partitions(partitions_name))
        new = [key for key in found if key not in known]
        if not new:
            return dg.SensorResult(skip_reason="no new set ids")
        context.log.info(f"adding {len(new)} new set partition(s)")
        return dg.SensorResult(dynamic_partitions_requests=[partitions_def.build_add_request(new)])

    return new_sets
