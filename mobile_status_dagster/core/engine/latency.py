"""Latency percentiles in bounded memory (a uniform reservoir sample)."""

from __future__ import annotations

import random

SAMPLE_SIZE = 10_000


class LatencySample:
    """Keeps a uniform sample of at most ``size`` latencies, whatever the run's length."""

    def __init__(self, size: int = SAMPLE_SIZE, seed: int | None = None) -> None:
        self._size = size
        self._seen = 0
        self._values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        """Offer one latency to the sample (Vitter's algorithm R)."""
        self._seen += 1
        if len(self._values) < self._size:
            self._values.append(value)
            return
        slot = self._random.randrange(self._seen)
        if slot < self._size:
            self._values[slot] = value

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0–100) of the sample; ``None`` when empty."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]
