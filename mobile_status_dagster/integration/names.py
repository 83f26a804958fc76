"""The names of one instance's definitions, all derived from its key prefix.

One instance is one source table enriched through one provider account. Two instances
in one code location (two source tables, or two accounts) differ by their key prefix,
and everything with a name is derived from it: asset keys, the partitions definition,
the sensors, the schedule, the pool, the provider resource's key and the tables. The
default, no prefix, keeps the names of a single instance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from mobile_status_dagster.core.store.schema import CHARGES, PUBLISHED, SUMMARY, Tables

_PART = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class MobileStatusNames:
    """Every name of one instance, from ``key_prefix`` (e.g. ``("crm",)``).

    With ``key_prefix=("crm",)``: the assets are ``crm/mobile_status``,
    ``crm/mobile_status_summary`` and ``crm/mobile_status_charges``; every other name
    starts with ``crm_`` (``crm_mobile_status_sets``, ``crm_mobile_status_new_sets``, the
    table ``crm_mobile_status``, …). The parts are joined with ``_``, so ``("crm", "cn")``
    and ``"crm_cn"`` share every name but the asset keys: give two instances prefixes
    that differ once joined.
    """

    key_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in self.key_prefix:
            if not _PART.fullmatch(part):
                raise dg.DagsterInvalidDefinitionError(
                    f"key_prefix: {part!r} is not a valid name part; use letters, digits and "
                    "underscores only"
                )

    @classmethod
    def of(cls, key_prefix: str | Sequence[str] | None) -> MobileStatusNames:
        """Names for a prefix given as ``"crm"``, ``["crm", "cn"]`` or ``None``."""
        if key_prefix is None:
            return cls()
        if isinstance(key_prefix, str):
            return cls((key_prefix,))
        return cls(tuple(key_prefix))

    @property
    def prefix(self) -> str:
        """The prefix of every name that is not an asset key: ``crm_``, or empty."""
        return "".join(f"{part}_" for part in self.key_prefix)

    def asset_key(self, name: str) -> dg.AssetKey:
        """The asset key of ``name`` under the key prefix."""
        return dg.AssetKey([*self.key_prefix, name])

    @property
    def enrichment(self) -> dg.AssetKey:
        """The provider-calling, partitioned asset."""
        return self.asset_key(PUBLISHED)

    @property
    def summary(self) -> dg.AssetKey:
        """The derived sorting summary."""
        return self.asset_key(SUMMARY)

    @property
    def charges(self) -> dg.AssetKey:
        """The derived charges."""
        return self.asset_key(CHARGES)

    @property
    def partitions(self) -> str:
        """The dynamic partitions definition of the sets."""
        return f"{self.prefix}mobile_status_sets"

    @property
    def new_sets_sensor(self) -> str:
        """The sensor that adds a partition per new set id."""
        return f"{self.prefix}mobile_status_new_sets"

    @property
    def automation_sensor(self) -> str:
        """The automation condition sensor that rebuilds the derived assets."""
        return f"{self.prefix}mobile_status_automation"

    @property
    def stale_schedule(self) -> str:
        """The (stopped by default) schedule that re-enriches stale partitions."""
        return f"{self.prefix}mobile_status_refresh_stale"

    @property
    def pool(self) -> str:
        """The Dagster concurrency pool of the provider-calling asset."""
        return f"{self.prefix}mobile_status_provider"

    @property
    def group(self) -> str:
        """The asset group."""
        return f"{self.prefix}mobile_status"

    @property
    def api_resource_key(self) -> str:
        """The resource key of the instance's :class:`MobileStatusResource`."""
        return f"{self.prefix}mobile_status_api"

    @property
    def tables(self) -> Tables:
        """The instance's tables in DuckDB."""
        return Tables(self.prefix)
