"""Each number's deterministic "real" status and serving operator, for a seed.

The truth is a pure function of ``(seed, mobile)``: the same number answers the
same way on every run with the same seed, and tests can compute the expected
answer with :func:`number_truth`.
"""

from __future__ import annotations

import hashlib

from mobile_status_dagster.core.numbers import network_operator

STATUS_MIX: tuple[tuple[int, float], ...] = (
    (1, 0.82),  # online
    (2, 0.05),  # powered off
    (3, 0.03),  # online but unavailable
    (4, 0.05),  # vacant
    (5, 0.035),  # cancelled
    (0, 0.015),  # unknown: answers unknown every time, never billed
)
"""``(check, share)`` pairs; shares sum to 1."""

PORTED_RATE = 0.04
"""Share of numbers served by an operator other than the prefix's."""

SERVING_OPERATORS: tuple[str, ...] = ("CM", "CU", "CT")

_CUMULATIVE: tuple[tuple[float, int], ...] = tuple(
    (sum(share for _, share in STATUS_MIX[: i + 1]), check)
    for i, (check, _) in enumerate(STATUS_MIX)
)
_SCALE = float(1 << 64)


def number_truth(mobile: str, seed: int = 0) -> tuple[int, str]:
    """``(check, serving operator)`` the simulator answers for ``mobile`` under ``seed``.

    The prefix's operator serves the number unless it is one of the ~4 % ported
    ones, which another of CM/CU/CT serves. China Broadnet numbers and numbers
    without a known network report ``CM`` (Broadnet shares China Mobile's network).
    """
    digest = hashlib.blake2b(f"{seed}:{mobile}".encode(), digest_size=16).digest()
    u_status = int.from_bytes(digest[:8], "big") / _SCALE
    port_bits = int.from_bytes(digest[8:], "big")
    check = _CUMULATIVE[-1][1]
    for bound, candidate in _CUMULATIVE:
        if u_status < bound:
            check = candidate
            break
    home = network_operator(mobile)
    operator: str = "CM"
    if home is not None and home.value in SERVING_OPERATORS:
        operator = home.value
    if port_bits / _SCALE < PORTED_RATE:
        others = [op for op in SERVING_OPERATORS if op != operator]
        operator = others[port_bits & 1]
    return check, operator
