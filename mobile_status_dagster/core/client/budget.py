"""A cap on billed calls that in-flight requests count against."""

from __future__ import annotations

import asyncio

from mobile_status_dagster.core.errors import ConfigurationError


class ChargeBudget:
    """At most ``limit`` calls may be billed, counting possibly-billed ones.

    Every attempt reserves one unit before it is sent and settles it when it ends: a
    billed or possibly-billed attempt consumes the unit, any other releases it. Since
    requests in flight hold reservations, the bill can never pass the limit. An attempt
    that finds every unit reserved waits for one to come back, and gives up only when
    none can (nothing left and nothing in flight).
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError("max_billed", "must be an integer >= 0")
        self.limit = limit
        self.charged = 0
        self.reserved = 0
        self._settled = asyncio.Event()

    @property
    def available(self) -> int:
        """Units neither charged nor reserved."""
        return self.limit - self.charged - self.reserved

    @property
    def exhausted(self) -> bool:
        """Nothing available and nothing in flight that could give a unit back."""
        return self.available <= 0 and self.reserved == 0

    async def reserve(self) -> bool:
        """Take a unit for one attempt; ``False`` once the budget is exhausted."""
        while self.available <= 0:
            if self.exhausted:
                return False
            self._settled.clear()
            await self._settled.wait()
        self.reserved += 1
        return True

    def settle(self, charged: bool) -> None:
        """End an attempt's reservation; ``charged`` if it was (possibly) billed."""
        self.reserved -= 1
        if charged:
            self.charged += 1
        self._settled.set()
