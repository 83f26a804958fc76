"""A pacing token bucket that also slows down when the provider says 4029.

Hand-written rather than taken from ``aiolimiter``: the client must lower its rate
at run time from what it observed when the provider refused, and a leaky bucket with
a fixed rate cannot do that.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging

log = logging.getLogger(__name__)

#: After a 4029, the new rate is this share of the calls the provider accepted in the
#: last second (its limit, as far as the client can see it).
THROTTLE_FACTOR = 0.9
#: Refusals within this many seconds of a slow-down were caused by requests already
#: sent at the old rate, so they do not slow the client down again.
THROTTLE_COOLDOWN_S = 1.0
_WINDOW_S = 1.0


class RateLimiter:
    """Spaces calls evenly at ``qps`` per second (``None``: unlimited until throttled).

    ``burst`` calls may go back to back after an idle spell; the default of 1 keeps
    every one-second window at or under ``qps`` calls, which is what a provider's
    QPS limit counts.
    """

    def __init__(self, qps: float | None, *, burst: int = 1) -> None:
        self._interval = 1.0 / qps if qps else None
        self._burst = max(1, burst)
        self._next_slot = 0.0
        self._cooled_until = 0.0
        self._accepted: collections.deque[float] = collections.deque(maxlen=100_000)

    @property
    def qps(self) -> float | None:
        """The rate in force, lowered by throttling; ``None`` when unlimited."""
        return 1.0 / self._interval if self._interval else None

    async def acquire(self) -> None:
        """Wait for this call's slot."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._interval is None:
            return
        slot = max(self._next_slot, now - (self._burst - 1) * self._interval)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def accepted(self) -> None:
        """The provider answered a call without refusing it for QPS."""
        self._accepted.append(asyncio.get_running_loop().time())

    def throttled(self) -> None:
        """The provider refused for QPS (4029): go 10 % under what it accepted last second."""
        now = asyncio.get_running_loop().time()
        if now < self._cooled_until:
            return
        observed = len(self._accepted) - bisect.bisect_left(self._accepted, now - _WINDOW_S)
        new_qps = max(1.0, THROTTLE_FACTOR * observed / _WINDOW_S)
        if self.qps is not None:
            new_qps = min(new_qps, THROTTLE_FACTOR * self.qps)
        self._interval = 1.0 / new_qps
        self._next_slot = max(self._next_slot, now + self._interval)
        self._cooled_until = now + THROTTLE_COOLDOWN_S
        log.warning("provider QPS limit reached: slowing down to %.1f calls/s", new_qps)
