"""Fast unit tests of pieces the acceptance tests reach only through whole runs.

No network, no Dagster runs, no wall clock: the charge budget under ``asyncio.run``, the
rate limiter on a fake clock, the grouping of set partitions into runs, and the
freshness SQL evaluated in an in-memory DuckDB against the Python rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest

from mobile_status_dagster.cli.runs import contiguous_ranges
from mobile_status_dagster.core.client import ratelimit
from mobile_status_dagster.core.client.budget import ChargeBudget
from mobile_status_dagster.core.client.ratelimit import RateLimiter
from mobile_status_dagster.core.errors import ConfigurationError, NumberRejectedError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.plan import fresh_sql, max_age_sql

# --- the charge budget ------------------------------------------------------------------


async def _spin() -> None:
    """Let every other ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_budget_accounts_reservations_and_settles() -> None:
    """available = limit - charged - reserved through reserve and both kinds of settle."""

    async def scenario() -> list[tuple[int, int, int, bool]]:
        budget = ChargeBudget(3)
        states = [(budget.available, budget.charged, budget.reserved, budget.exhausted)]
        for charged in (True, False):
            assert await budget.reserve()
            states.append((budget.available, budget.charged, budget.reserved, budget.exhausted))
            budget.settle(charged)
            states.append((budget.available, budget.charged, budget.reserved, budget.exhausted))
        return states

    assert asyncio.run(scenario()) == [
        (3, 0, 0, False),
        (2, 0, 1, False),  # reserved
        (2, 1, 0, False),  # settled charged: the unit is consumed
        (1, 1, 1, False),  # reserved again
        (2, 1, 0, False),  # settled uncharged: the unit comes back
    ]


def test_budget_reservation_waits_while_units_are_reserved_and_resumes_on_release() -> None:
    """A reservation with every unit in flight waits; a charged settle keeps it waiting,
    an uncharged one lets it through."""

    async def scenario() -> None:
        budget = ChargeBudget(2)
        assert await budget.reserve()
        assert await budget.reserve()
        waiting = asyncio.create_task(budget.reserve())
        await _spin()
        assert not waiting.done()
        budget.settle(True)  # consumed: still nothing available, one still in flight
        await _spin()
        assert not waiting.done()
        assert (budget.available, budget.exhausted) == (0, False)
        budget.settle(False)  # released: the waiter takes it
        assert await asyncio.wait_for(waiting, 1) is True
        assert (budget.available, budget.charged, budget.reserved) == (0, 1, 1)

    asyncio.run(scenario())


def test_budget_reserve_returns_false_once_exhausted() -> None:
    """With nothing left and nothing in flight, waiting and new reservations get False."""

    async def scenario() -> None:
        budget = ChargeBudget(1)
        assert await budget.reserve()
        waiting = asyncio.create_task(budget.reserve())
        await _spin()
        assert not waiting.done()
        budget.settle(True)  # the last unit is spent
        assert await asyncio.wait_for(waiting, 1) is False
        assert budget.exhausted
        assert await budget.reserve() is False
        assert (budget.available, budget.charged, budget.reserved) == (0, 1, 0)

    asyncio.run(scenario())


def test_budget_charged_settles_consume_units_up_to_the_limit() -> None:
    """``limit`` charged attempts use the budget up; a zero budget is exhausted at once."""

    async def scenario() -> tuple[list[bool], list[tuple[int, int, bool]]]:
        budget, empty = ChargeBudget(3), ChargeBudget(0)
        granted = []
        for _ in range(4):
            granted.append(await budget.reserve())
            if granted[-1]:
                budget.settle(True)
        granted.append(await empty.reserve())
        states = [(b.available, b.charged, b.exhausted) for b in (budget, empty)]
        return granted, states

    granted, states = asyncio.run(scenario())
    assert granted == [True, True, True, False, False]
    assert states == [(0, 3, True), (0, 0, True)]


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3", None])
def test_budget_refuses_invalid_limits_naming_max_billed(limit: Any) -> None:
    """Negative, fractional, boolean and non-numeric limits raise ConfigurationError(max_billed)."""
    with pytest.raises(ConfigurationError, match="max_billed") as caught:
        ChargeBudget(limit)
    assert caught.value.setting == "max_billed"


# --- the rate limiter ---------------------------------------------------------------------


class FakeClock:
    """Stands in for the rate limiter module's ``asyncio``: loop time and ``sleep``.

    ``sleep`` advances the time at once, so pacing is measured in fake seconds.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def get_running_loop(self) -> FakeClock:
        return self

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock behind :mod:`mobile_status_dagster.core.client.ratelimit`."""
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "asyncio", fake)
    return fake


def acquire_times(limiter: RateLimiter, clock: FakeClock, calls: int) -> list[float]:
    """The fake times, relative to the first call, at which ``calls`` acquires return."""
    start = clock.now

    async def run() -> list[float]:
        times = []
        for _ in range(calls):
            await limiter.acquire()
            times.append(round(clock.now - start, 9))
        return times

    return asyncio.run(run())


def accept(limiter: RateLimiter, clock: FakeClock, calls: int, over_s: float = 0.9) -> None:
    """Record ``calls`` accepted answers spread evenly over the last ``over_s`` seconds."""
    start = clock.now
    for i in range(calls):
        clock.now = start + over_s * i / max(1, calls - 1)
        limiter.accepted()


def test_limiter_spaces_calls_evenly_at_qps(clock: FakeClock) -> None:
    """At 5 calls/s the first call goes at once and each next one 0.2 s after the last."""
    limiter = RateLimiter(5)
    assert acquire_times(limiter, clock, 6) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert clock.sleeps == pytest.approx([0.2] * 5)


def test_limiter_lets_a_burst_go_back_to_back_after_an_idle_spell(clock: FakeClock) -> None:
    """With burst=3 after idling, three calls go at once, then the pace is 1/qps again."""
    limiter = RateLimiter(5, burst=3)
    assert acquire_times(limiter, clock, 5) == [0.0, 0.0, 0.0, 0.2, 0.4]


def test_limiter_without_qps_never_waits(clock: FakeClock) -> None:
    """qps=None is unlimited: no sleeps, and the rate stays None."""
    limiter = RateLimiter(None)
    assert acquire_times(limiter, clock, 50) == [0.0] * 50
    assert (clock.sleeps, limiter.qps) == ([], None)


@pytest.mark.parametrize("burst", [0, -3])
def test_limiter_treats_a_burst_below_one_as_one(clock: FakeClock, burst: int) -> None:
    """A burst below 1 is raised to 1: calls never go back to back."""
    limiter = RateLimiter(10, burst=burst)
    assert acquire_times(limiter, clock, 3) == [0.0, 0.1, 0.2]


@pytest.mark.parametrize(
    ("qps", "accepted", "slowed_to"),
    [
        (None, 30, 27.0),  # unlimited: 90 % of the 30 accepted in the last second
        (50.0, 20, 18.0),  # 90 % of what was accepted, below 90 % of the rate
        (10.0, 11, 9.0),  # never above 90 % of the rate in force
    ],
)
def test_limiter_slows_to_90_percent_of_what_was_accepted_after_a_4029(
    clock: FakeClock, qps: float | None, accepted: int, slowed_to: float
) -> None:
    """A 4029 sets the rate to min(0.9 x accepted in the last second, 0.9 x the rate)."""
    limiter = RateLimiter(qps)

    async def run() -> float | None:
        accept(limiter, clock, accepted)
        limiter.throttled()
        return limiter.qps

    assert asyncio.run(run()) == pytest.approx(slowed_to)
    assert ratelimit.THROTTLE_FACTOR == 0.9


def test_limiter_paces_at_the_measured_ceiling_for_the_rest_of_the_run(clock: FakeClock) -> None:
    """After a measured 4029 the next call waits 1/new rate, and the rate never climbs back."""
    limiter = RateLimiter(None)

    async def throttle() -> None:
        accept(limiter, clock, 20)
        limiter.throttled()

    asyncio.run(throttle())
    assert limiter.qps == pytest.approx(18.0)
    assert acquire_times(limiter, clock, 3) == pytest.approx([1 / 18, 2 / 18, 3 / 18])
    clock.now += 10  # quiet seconds: a measured ceiling is not probed again
    acquire_times(limiter, clock, 1)
    assert limiter.qps == pytest.approx(18.0)


def test_limiter_ignores_refusals_within_the_cooldown(clock: FakeClock) -> None:
    """A second 4029 within THROTTLE_COOLDOWN_S keeps the rate; one after it lowers it again."""
    limiter = RateLimiter(None)

    async def run() -> list[float | None]:
        accept(limiter, clock, 30)
        limiter.throttled()
        rates = [limiter.qps]
        clock.now += ratelimit.THROTTLE_COOLDOWN_S / 2
        limiter.throttled()  # caused by calls already sent at the old rate
        rates.append(limiter.qps)
        clock.now += ratelimit.THROTTLE_COOLDOWN_S  # past the cooldown
        accept(limiter, clock, 20)
        limiter.throttled()
        rates.append(limiter.qps)
        return rates

    assert asyncio.run(run()) == pytest.approx([27.0, 27.0, 18.0])


def test_limiter_halves_without_a_sample_and_recovers_to_its_ceiling(clock: FakeClock) -> None:
    """Too few accepted calls to measure: the rate halves, then rises 25 % per quiet second
    (the first second after the cooldown) up to the configured rate."""
    limiter = RateLimiter(40)

    async def run() -> list[float | None]:
        accept(limiter, clock, ratelimit.MIN_SAMPLE - 1)
        limiter.throttled()
        rates = [limiter.qps]
        clock.now += ratelimit.THROTTLE_COOLDOWN_S + 1.0
        for _ in range(5):
            await limiter.acquire()
            rates.append(limiter.qps)
            clock.now += 1.0
        return rates

    assert asyncio.run(run()) == pytest.approx([20.0, 25.0, 31.25, 39.0625, 40.0, 40.0])


# --- grouping set partitions into runs ------------------------------------------------------

ORDERED = ["a", "b", "c", "d", "e"]
RANGE_CASES: list[tuple[str, Sequence[str], Sequence[str], list[tuple[str, ...]]]] = [
    ("nothing-known", [], ["a"], []),
    ("nothing-wanted", ORDERED, [], []),
    ("all", ORDERED, ORDERED, [("a", "b", "c", "d", "e")]),
    ("one", ORDERED, ["c"], [("c",)]),
    ("last", ORDERED, ["e"], [("e",)]),
    ("gaps", ORDERED, ["a", "c", "d"], [("a",), ("c", "d")]),
    ("alternating", ORDERED, ["a", "c", "e"], [("a",), ("c",), ("e",)]),
    ("wanted-out-of-order", ORDERED, ["d", "a", "c"], [("a",), ("c", "d")]),
    ("duplicates", ORDERED, ["b", "a", "b", "a"], [("a", "b")]),
    ("unknown-keys-dropped", ORDERED, ["zz", "b", "c", "yy"], [("b", "c")]),
    ("unknown-between", ORDERED, ["b", "not-a-key", "d"], [("b",), ("d",)]),
]


@pytest.mark.parametrize(
    ("ordered", "wanted", "expected"),
    [case[1:] for case in RANGE_CASES],
    ids=[case[0] for case in RANGE_CASES],
)
def test_contiguous_ranges(
    ordered: Sequence[str], wanted: Sequence[str], expected: list[tuple[str, ...]]
) -> None:
    """Wanted keys group into runs adjacent in partition order (keys not there are dropped)."""
    assert contiguous_ranges(ordered, wanted) == expected


# --- the freshness SQL ---------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CACHE_DDL = """
CREATE TABLE cache (
    mobile        VARCHAR NOT NULL,
    status_code   TINYINT,
    status        VARCHAR,
    operator      VARCHAR,
    order_number  VARCHAR,
    provider_code INTEGER,
    checked_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR
)
"""
DEFAULT = Freshness()
VACANT_WEEK = Freshness(by_status={Status.VACANT: timedelta(days=7)})
SHORT = Freshness(
    max_age=timedelta(hours=6),
    by_status={Status.ONLINE: timedelta(hours=1), Status.CANCELLED: timedelta(days=90)},
)
SECOND = timedelta(seconds=1)


def ages_around(freshness: Freshness) -> list[timedelta]:
    """Ages on both sides of, and exactly at, every max age ``freshness`` names."""
    edges = {freshness.max_age, *freshness.by_status.values()}
    return sorted({age + delta for age in edges for delta in (-SECOND, timedelta(0), SECOND)})


def cache_rows(freshness: Freshness) -> list[tuple[Any, ...]]:
    """Cache rows: every status, and a 4003 rejection, at every age of :func:`ages_around`."""
    answers: list[tuple[int | None, int]] = [(s.value, 2000) for s in Status]
    answers.append((None, NumberRejectedError.code))
    rows: list[tuple[Any, ...]] = []
    for age in [timedelta(0), *ages_around(freshness)]:
        for status_code, provider_code in answers:
            i = len(rows)
            status = None if status_code is None else Status(status_code).label
            order = None if status_code is None else f"{i:032X}"
            checked_at = NOW - age
            rows.append((f"m{i}", status_code, status, "CM", order, provider_code, checked_at, "r"))
    return rows


def python_fresh(row: tuple[Any, ...], freshness: Freshness) -> bool:
    """The Python rule: a billed answer younger than ``max_age_for`` its status, or a 4003
    younger than ``max_age``."""
    _, status_code, _, _, _, provider_code, checked_at, _ = row
    age = NOW - checked_at
    if status_code is None:
        return bool(provider_code == NumberRejectedError.code and age < freshness.max_age)
    max_age = freshness.max_age_for(Status(status_code))
    return max_age is not None and age < max_age


def sql_fresh(rows: list[tuple[Any, ...]], freshness: Freshness) -> set[str]:
    """The mobiles :func:`fresh_sql` keeps, in an in-memory DuckDB holding ``rows``."""
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(CACHE_DDL)
        conn.executemany("INSERT INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        found = conn.execute(
            f"SELECT mobile FROM cache c WHERE {fresh_sql('c', freshness)}", {"now": NOW}
        ).fetchall()
    return {str(mobile) for (mobile,) in found}


@pytest.mark.parametrize(
    "freshness", [DEFAULT, VACANT_WEEK, SHORT], ids=["default", "vacant-7-days", "short"]
)
def test_fresh_sql_agrees_with_the_python_rule(freshness: Freshness) -> None:
    """fresh_sql keeps exactly the rows Freshness.max_age_for calls fresh, edges included."""
    rows = cache_rows(freshness)
    expected = {row[0] for row in rows if python_fresh(row, freshness)}
    assert sql_fresh(rows, freshness) == expected
    assert expected  # the cases hold fresh rows, and stale ones:
    assert len(expected) < len(rows)


def test_fresh_sql_cases_by_hand() -> None:
    """Billed answers fresh until max_age (exclusive), the override for vacant, unknown
    never, a 4003 within max_age."""
    day = timedelta(days=1)
    cases = {
        # mobile: (status, provider_code, age, fresh with VACANT_WEEK)
        "online-29d": (Status.ONLINE, 2000, 29 * day, True),
        "online-30d": (Status.ONLINE, 2000, 30 * day, False),  # exactly max_age: stale
        "online-31d": (Status.ONLINE, 2000, 31 * day, False),
        "vacant-6d": (Status.VACANT, 2000, 6 * day, True),
        "vacant-7d": (Status.VACANT, 2000, 7 * day, False),  # exactly its override
        "vacant-10d": (Status.VACANT, 2000, 10 * day, False),  # fresh under the default
        "powered-off-10d": (Status.POWERED_OFF, 2000, 10 * day, True),
        "unknown-now": (Status.UNKNOWN, 2000, timedelta(0), False),
        "rejected-29d": (None, NumberRejectedError.code, 29 * day, True),
        "rejected-30d": (None, NumberRejectedError.code, 30 * day, False),
        "other-error-1d": (None, 5000, day, False),
    }
    rows = [
        (mobile, None if s is None else int(s), None, None, None, provider, NOW - age, None)
        for mobile, (s, provider, age, _) in cases.items()
    ]
    fresh = {mobile for mobile, (*_, is_fresh) in cases.items() if is_fresh}
    assert sql_fresh(rows, VACANT_WEEK) == fresh
    assert {row[0] for row in rows if python_fresh(row, VACANT_WEEK)} == fresh
    # Without the override, the 7- and 10-day-old vacant answers are fresh again.
    assert sql_fresh(rows, DEFAULT) == fresh | {"vacant-7d", "vacant-10d"}


@pytest.mark.parametrize(
    "freshness", [DEFAULT, VACANT_WEEK, SHORT], ids=["default", "vacant-7-days", "short"]
)
def test_max_age_sql_is_max_age_for_every_billed_status(freshness: Freshness) -> None:
    """max_age_sql gives each billed status its Freshness.max_age_for; NULL gets max_age."""
    codes: list[int | None] = [s.value for s in Status if s.billed]
    with duckdb.connect() as conn:
        ages = conn.execute(
            f"SELECT s, {max_age_sql('s', freshness)} "
            "FROM (SELECT unnest(CAST(? AS TINYINT[])) AS s)",
            [[*codes, None]],
        ).fetchall()
    expected: dict[int | None, timedelta | None] = {
        code: freshness.max_age_for(Status(code)) for code in codes if code is not None
    }
    expected[None] = freshness.max_age
    assert dict(ages) == expected
    assert freshness.max_age_for(Status.UNKNOWN) is None  # fresh_sql never keeps unknown


def test_max_age_sql_keeps_fractions_of_a_second() -> None:
    """A max age of 10.7 s is 10.7 s in SQL too (it was cut to whole seconds)."""
    sql = max_age_sql("status_code", Freshness(max_age=timedelta(seconds=10.7)))
    with duckdb.connect() as conn:
        (age,) = conn.execute(f"SELECT {sql.replace('status_code', '1')}").fetchone() or (None,)
    assert age == timedelta(seconds=10.7)
