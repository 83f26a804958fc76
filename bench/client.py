"""Scenarios 1–3: the client against its physical limit, the obvious alternatives, the QPS cap."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.report import Figure
from bench.simulator_process import simulator_process
from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.simulator import DEMO_TOKEN
from tests.support import sample_numbers

LATENCY_S = 0.05


async def _library(
    base_url: str, numbers: list[str], concurrency: int, qps: float | None = None
) -> tuple[float, float, int]:
    """Calls/s, client CPU ms per call, and 4029 answers, for the library's client."""
    settings = ClientSettings(
        base_url=base_url, token=DEMO_TOKEN, max_concurrency=concurrency, qps=qps
    )
    throttled = 0
    async with AsyncMobileStatusClient(settings) as client:
        started, cpu = time.perf_counter(), time.process_time()
        async for result in client.check_many(numbers):
            throttled += sum(1 for a in result.attempts if a.code == 4029)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(numbers) / elapsed, cpu / len(numbers) * 1000, throttled


async def _plain_httpx(base_url: str, numbers: list[str], concurrency: int) -> float:
    """Calls/s of a plain ``httpx.AsyncClient`` with a ``concurrency``-connection pool."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(mobile: str) -> None:
            async with semaphore:
                response = await client.get(
                    "/mobile/check/", params={"mobile": mobile}, headers={"token": DEMO_TOKEN}
                )
                response.json()

        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in numbers))
        return len(numbers) / (time.perf_counter() - started)


def _sequential(base_url: str, numbers: list[str]) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for mobile in numbers:
            client.get(
                "/mobile/check/", params={"mobile": mobile}, headers={"token": DEMO_TOKEN}
            ).json()
    return len(numbers) / (time.perf_counter() - started)


def throughput(quick: bool) -> list[Figure]:
    """Scenario 1 and 2: achieved calls/s vs 64 / latency, and vs plain httpx."""
    count = 3000 if quick else 20_000
    numbers = sample_numbers(count, seed=1)
    figures = []
    with simulator_process("--latency-ms", str(LATENCY_S * 1000), "--seed", "1") as url:
        asyncio.run(_library(url, numbers[:500], 64))  # warm up both processes
        rates = {}
        for concurrency in (64, 256):
            rate, cpu_ms, _ = asyncio.run(_library(url, numbers, concurrency))
            rates[concurrency] = rate
            ideal = concurrency / LATENCY_S
            figures.append(
                Figure(
                    "1 client throughput",
                    f"library, {count} numbers, concurrency {concurrency}",
                    rate,
                    "calls/s",
                    f"ideal {concurrency}/latency",
                    ideal,
                    rate / ideal,
                    ">= 0.93 of ideal" if concurrency == 64 else "report",
                    rate / ideal >= 0.93 if concurrency == 64 else None,
                )
            )
            if concurrency == 64:
                figures.append(
                    Figure(
                        "1 client throughput",
                        "client CPU per call, concurrency 64",
                        cpu_ms,
                        "ms",
                        target="<= 0.5 ms",
                        met=cpu_ms <= 0.5,
                    )
                )
        sample = 100 if quick else 500
        sequential = _sequential(url, numbers[:sample])
        plain = asyncio.run(_plain_httpx(url, numbers[: 500 if quick else 3000], 64))
    figures.append(
        Figure(
            "2 vs alternatives",
            f"sequential httpx.get loop ({sample} numbers)",
            sequential,
            "calls/s",
            "library at 64",
            rates[64],
            rates[64] / sequential,
            "speed-up",
        )
    )
    figures.append(
        Figure(
            "2 vs alternatives",
            "plain httpx.AsyncClient, 64 connections",
            plain,
            "calls/s",
            "library at 64",
            rates[64],
            rates[64] / plain,
            "speed-up",
        )
    )
    return figures


def rate_limit(quick: bool) -> list[Figure]:
    """Scenario 3: a QPS cap of 300 against a provider that refuses above 310."""
    qps, limit = 300, 310
    count = qps * (3 if quick else 10)
    numbers = sample_numbers(count, seed=3)
    with simulator_process("--latency-ms", str(LATENCY_S * 1000), "--qps-limit", str(limit)) as url:
        rate, _, throttled = asyncio.run(_library(url, numbers, 64, qps=qps))
    return [
        Figure(
            "3 rate limit",
            f"library with qps={qps}, {count} numbers",
            rate,
            "calls/s",
            "the cap",
            qps,
            rate / qps,
            "within 2 %",
            abs(rate / qps - 1) <= 0.02,
        ),
        Figure(
            "3 rate limit",
            f"4029 answers (provider refuses above {limit}/s)",
            throttled,
            "answers",
            target="0",
            met=throttled == 0,
        ),
    ]
