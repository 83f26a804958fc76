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
#: last second: its limit, as far as the client can measure it.
THROTTLE_FACTOR = 0.9
#: Refusals within this many seconds of a slow-down were caused by requests already
#: sent at the old rate, so they do not slow the client down again.
THROTTLE_COOLDOWN_S = 1.0
#: Fewer accepted calls than this in the last second do not measure the provider's
#: limit (someone else may have used the account's quota): halve the rate instead, and
#: recover by this factor per quiet second.
MIN_SAMPLE = 5
RECOVERY_FACTOR = 1.25
_WINDOW_S = 1.0


class RateLimiter:
    """Spaces calls evenly at ``qps`` per second (``None``: unlimited until throttled).

    ``burst`` calls may go back to back after an idle spell; the default of 1 keeps
    every one-second window at or under ``qps`` calls, which is what a provider's
    QPS limit counts.

    A 4029 (:meth:`throttled`) lowers the rate to 90 % of what the provider accepted in
    the last second, and that becomes the ceiling for the rest of the run, so the
    client stays under the limit instead of probing it again. When too few calls were
    accepted to measure the limit, the rate halves and then recovers, 25 % per second
    without refusals, up to the ceiling.
    """

    def __init__(self, qps: float | None, *, burst: int = 1) -> None:
        self._qps = qps
        self._ceiling = qps
        self._burst = max(1, burst)
        self._next_slot = 0.0
        self._cooled_until = 0.0
        self._last_change = 0.0
        self._accepted: collections.deque[float] = collections.deque(maxlen=100_000)

    @property
    def qps(self) -> float | None:
        """The rate in force, lowered by throttling; ``None`` when unlimited."""
        return self._qps

    async def acquire(self) -> None:
        """Wait for this call's slot."""
        if self._qps is None:
            return
        now = asyncio.get_running_loop().time()
        self._recover(now)
        interval = 1.0 / self._qps
        slot = max(self._next_slot, now - (self._burst - 1) * interval)
        self._next_slot = slot + interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def accepted(self) -> None:
        """The provider answered a call without refusing it for QPS."""
        self._accepted.append(asyncio.get_running_loop().time())

    def throttled(self) -> None:
        """The provider refused for QPS (4029): slow down (see the class docstring)."""
        now = asyncio.get_running_loop().time()
        if now < self._cooled_until:
            return
        observed = len(self._accepted) - bisect.bisect_left(self._accepted, now - _WINDOW_S)
        if observed >= MIN_SAMPLE:
            new_qps = THROTTLE_FACTOR * observed / _WINDOW_S
            self._ceiling = min(new_qps, self._ceiling or new_qps)
        else:
            new_qps = max(1.0, (self._qps or 2.0 * MIN_SAMPLE) / 2)
        if self._qps is not None:
            new_qps = min(new_qps, THROTTLE_FACTOR * self._qps)
        self._qps = new_qps
        self._next_slot = max(self._next_slot, now + 1.0 / new_qps)
        self._cooled_until = self._last_change = now + THROTTLE_COOLDOWN_S
        log.warning("provider QPS limit reached: slowing down to %.1f calls/s", new_qps)

    def _recover(self, now: float) -> None:
        """Raise a halved rate again, a step per quiet second, never above the ceiling."""
        if self._qps is None or now - self._last_change < _WINDOW_S:
            return
        if self._ceiling is not None and self._qps >= self._ceiling:
            return
        raised = self._qps * RECOVERY_FACTOR
        self._qps = raised if self._ceiling is None else min(self._ceiling, raised)
        self._last_change = now
