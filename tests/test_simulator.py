"""The simulator over real HTTP on 127.0.0.1: contract, limits, faults, ledger, lifecycle."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobile_status_dagster.core.numbers import network_operator
from mobile_status_dagster.simulator import (
    DEMO_TOKEN,
    ODD_CODE,
    SimulatedProvider,
    SimulatorConfig,
    SimulatorServer,
    add_simulator_arguments,
    config_from_args,
    number_truth,
)
from mobile_status_dagster.simulator.cli import is_loopback
from tests.support import numbers_with_status

ORDER_NUMBER = re.compile(r"[0-9A-F]{32}")
LISTENING = re.compile(r"simulator listening on (http://127\.0\.0\.1:(\d+))")
ADMIN_TOKEN = re.compile(r"simulator admin token: (\S+) \(send it as the X-Sim-Admin header .*\)")


def numbers(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct well-formed mobile numbers, reproducibly."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        out.add(f"1{rng.randrange(3, 10)}{rng.randrange(10**9):09d}")
    return sorted(out)


def numbers_with_truth(check: int, count: int, seed: int = 0) -> list[str]:
    """Numbers (of 4,000 :func:`numbers`) whose truth under ``seed`` has the given ``check``."""
    return numbers_with_status(check, count, seed, pool=numbers(4000, seed=11))


def ask(
    client: httpx.Client,
    mobile: str | None,
    token: str | None = DEMO_TOKEN,
    *,
    in_query: bool = False,
    path: str = "/mobile/check/",
) -> httpx.Response:
    params: dict[str, str] = {} if mobile is None else {"mobile": mobile}
    headers: dict[str, str] = {}
    if token is not None:
        if in_query:
            params["token"] = token
        else:
            headers["token"] = token
    return client.get(path, params=params, headers=headers)


def code_of(response: httpx.Response) -> int:
    code = response.json()["code"]
    assert isinstance(code, int)
    return code


@pytest.fixture
def client(simulator: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.base_url, timeout=10, trust_env=False) as c:
        yield c


def admin(sim: SimulatorServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """An admin request as the tooling sends it: the admin token, and POSTs as JSON."""
    headers = sim.admin_headers | kwargs.pop("headers", {})
    if method == "POST":
        headers.setdefault("Content-Type", "application/json")
    return httpx.request(
        method, sim.base_url + path, headers=headers, timeout=10, trust_env=False, **kwargs
    )


# -- answers -------------------------------------------------------------------------


def test_answers_follow_truth_and_the_configured_mix(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    sample = numbers(3000)
    checks: collections.Counter[int] = collections.Counter()
    ported = eligible = 0
    for mobile in sample:
        response = ask(client, mobile)
        assert response.status_code == 200
        body = response.json()
        assert body["code"] == 2000
        assert body["msg"] == "查询成功"
        assert isinstance(body["check"], str)
        check, operator = int(body["check"]), body["operator"]
        assert (check, operator) == simulator.provider.truth(mobile) == number_truth(mobile, 0)
        assert operator in {"CM", "CU", "CT"}
        checks[check] += 1
        network = network_operator(mobile)
        if network is not None and network.value in {"CM", "CU", "CT"}:
            eligible += 1
            ported += operator != network.value
    share = {check: checks[check] / len(sample) for check in range(6)}
    # ~4 standard deviations of a binomial share over 3000 draws.
    assert share[1] == pytest.approx(0.82, abs=0.03)
    assert share[2] == pytest.approx(0.05, abs=0.017)
    assert share[3] == pytest.approx(0.03, abs=0.013)
    assert share[4] == pytest.approx(0.05, abs=0.017)
    assert share[5] == pytest.approx(0.035, abs=0.014)
    assert share[0] == pytest.approx(0.015, abs=0.009)
    assert ported / eligible == pytest.approx(0.04, abs=0.016)


def test_truth_is_stable_for_a_seed_and_differs_across_seeds() -> None:
    # Pinned values: the truth must not change between runs, versions or machines.
    assert number_truth("13912345678", 0) == (4, "CM")
    assert number_truth("18912345678", 0) == (5, "CT")
    assert number_truth("13912345678", 1) == (1, "CM")
    assert number_truth("19212345678", 0)[1] == "CM"  # China Broadnet answers CM

    sample = numbers(300)
    answers: dict[int, list[tuple[int, str]]] = {}
    for seed in (0, 1):
        with (
            SimulatorServer(SimulatorConfig(latency_ms=0, seed=seed)) as server,
            httpx.Client(base_url=server.base_url, trust_env=False) as c,
        ):
            answers[seed] = []
            for mobile in sample:
                body = ask(c, mobile).json()
                answers[seed].append((int(body["check"]), body["operator"]))
    assert answers[0] == [number_truth(m, 0) for m in sample]
    assert answers[1] == [number_truth(m, 1) for m in sample]
    differing = sum(a != b for a, b in zip(answers[0], answers[1], strict=True))
    assert differing > 30  # ~1 - (0.82² + ...) ≈ 31 % of numbers differ


def test_unknown_answers_unknown_every_time_and_is_never_billed(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    unknown = numbers_with_truth(0, 5)
    assert len(unknown) == 5
    simulator.provider.update_config(balance=1)
    for _ in range(3):
        for mobile in unknown:
            body = ask(client, mobile).json()
            assert (body["code"], body["check"]) == (2000, "0")
    assert simulator.provider.balance_remaining == 1
    assert simulator.provider.ledger(billed_only=True) == []
    assert all(not e.billed for e in simulator.provider.ledger())
    assert ask(client, numbers_with_truth(1, 1)[0]).json()["check"] == "1"
    assert simulator.provider.balance_remaining == 0


def test_order_numbers_are_32_uppercase_hex_and_unique(client: httpx.Client) -> None:
    mobile = numbers_with_truth(1, 1)[0]
    orders = [ask(client, mobile).json()["order_number"] for _ in range(300)]
    assert all(ORDER_NUMBER.fullmatch(o) for o in orders)
    assert len(set(orders)) == len(orders)


def test_path_without_trailing_slash(client: httpx.Client) -> None:
    assert code_of(ask(client, "13912345678", path="/mobile/check")) == 2000


# -- token, account, number checks ----------------------------------------------------


def test_token_in_header_or_query(simulator: SimulatorServer, client: httpx.Client) -> None:
    assert code_of(ask(client, "13912345678")) == 2000
    assert code_of(ask(client, "13912345678", in_query=True)) == 2000
    assert [e.token_ok for e in simulator.provider.ledger()] == [True, True]


@pytest.mark.parametrize("in_query", [False, True])
@pytest.mark.parametrize("token", [None, "", "WRONG", DEMO_TOKEN.lower(), DEMO_TOKEN + "X"])
def test_missing_or_wrong_token_is_4001_and_not_billed(
    simulator: SimulatorServer, client: httpx.Client, token: str | None, in_query: bool
) -> None:
    response = ask(client, "13912345678", token, in_query=in_query)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 4001
    assert "order_number" not in body
    (entry,) = simulator.provider.ledger()
    assert (entry.token_ok, entry.code, entry.billed, entry.order_number) == (
        False,
        4001,
        False,
        None,
    )


@pytest.mark.parametrize(
    "mobile",
    [
        None,
        "",
        "1391234567",
        "139123456789",
        "12912345678",
        "1391234567a",
        "+8613912345678",
        " 13912345678",
        "13912345678\n",
        "１３９１２３４５６７８",
    ],
)
def test_malformed_mobile_is_4003(
    simulator: SimulatorServer, client: httpx.Client, mobile: str | None
) -> None:
    body = ask(client, mobile).json()
    assert body["code"] == 4003
    assert "order_number" not in body
    (entry,) = simulator.provider.ledger()
    assert entry.mobile == mobile
    assert not entry.billed


def test_disabled_account_is_4004_after_the_token_check(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    simulator.provider.update_config(disabled=True)
    assert code_of(ask(client, "13912345678")) == 4004
    assert code_of(ask(client, "bad")) == 4004
    assert code_of(ask(client, "13912345678", "WRONG")) == 4001
    simulator.provider.update_config(disabled=False)
    assert code_of(ask(client, "13912345678")) == 2000
    assert simulator.provider.stats().billed == 1


def test_balance_is_spent_then_4002_and_can_be_topped_up(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    simulator.provider.update_config(balance=5)
    codes = [code_of(ask(client, m)) for m in numbers(40)]
    billed = simulator.provider.ledger(billed_only=True)
    assert len(billed) == 5
    last_billed = max(e.seq for e in billed)
    assert all(c == 4002 for c in codes[last_billed:])
    assert simulator.provider.balance_remaining == 0
    assert admin(simulator, "POST", "/_sim/config", json={"balance": 2}).status_code == 200
    for mobile in numbers_with_truth(1, 3):
        ask(client, mobile)
    assert len(simulator.provider.ledger(billed_only=True)) == 7
    assert simulator.provider.stats().billed == 7


def test_concurrent_requests_never_overspend_the_balance(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(balance=100)

    def worker(chunk: list[str]) -> list[int]:
        with httpx.Client(base_url=simulator.base_url, trust_env=False, timeout=10) as c:
            return [code_of(ask(c, m)) for m in chunk]

    sample = numbers(400)
    with ThreadPoolExecutor(8) as pool:
        codes = [c for chunk in pool.map(worker, [sample[i::8] for i in range(8)]) for c in chunk]
    assert len(simulator.provider.ledger(billed_only=True)) == 100
    assert simulator.provider.stats().billed == 100
    assert codes.count(2000) + codes.count(4002) == 400
    assert simulator.provider.balance_remaining == 0


def test_qps_limit_refuses_with_4029_and_refusals_do_not_count(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    simulator.provider.update_config(qps_limit=3)
    start = time.monotonic()
    first = [code_of(ask(client, "13912345678")) for _ in range(8)]
    assert time.monotonic() - start < 0.5, "loopback requests took too long to test a 1 s window"
    assert first == [2000, 2000, 2000] + [4029] * 5
    time.sleep(max(0.0, start + 0.6 - time.monotonic()))
    assert [code_of(ask(client, "13912345678")) for _ in range(4)] == [4029] * 4
    # The three admitted requests leave the window; the refused ones never entered it.
    time.sleep(max(0.0, start + 1.15 - time.monotonic()))
    assert code_of(ask(client, "13912345678")) == 2000
    stats = simulator.provider.stats()
    assert stats.max_qps == 3
    assert stats.by_code["4029"] == 9
    assert stats.admitted == 4


def test_requery_too_soon_is_4030(simulator: SimulatorServer, client: httpx.Client) -> None:
    simulator.provider.update_config(requery_min_interval_s=0.5)
    a, b = numbers_with_truth(1, 2)
    assert code_of(ask(client, a)) == 2000
    assert code_of(ask(client, a)) == 4030
    assert code_of(ask(client, b)) == 2000
    time.sleep(0.6)
    assert code_of(ask(client, a)) == 2000
    assert [e.billed for e in simulator.provider.ledger()] == [True, False, True, True]


def test_latency_delays_answers(simulator: SimulatorServer, client: httpx.Client) -> None:
    simulator.provider.update_config(latency_ms=200)
    start = time.monotonic()
    assert code_of(ask(client, "13912345678")) == 2000
    assert time.monotonic() - start >= 0.2


# -- response shapes ---------------------------------------------------------------------


def test_error_http_status_202(simulator: SimulatorServer, client: httpx.Client) -> None:
    simulator.provider.update_config(error_http_status=202)
    assert ask(client, "13912345678", "WRONG").status_code == 202
    bad = ask(client, "123")
    assert (bad.status_code, code_of(bad)) == (202, 4003)
    ok = ask(client, "13912345678")
    assert (ok.status_code, code_of(ok)) == (200, 2000)
    assert [e.http_status for e in simulator.provider.ledger()] == [202, 202, 200]


@pytest.mark.parametrize(
    ("style", "keys"),
    [
        ("lower", ["code", "msg", "order_number", "check", "operator"]),
        ("title", ["Code", "Msg", "Order_number", "Check", "Operator"]),
        ("upper", ["CODE", "MSG", "ORDER_NUMBER", "CHECK", "OPERATOR"]),
    ],
)
@pytest.mark.parametrize("check_as_int", [False, True])
def test_field_styles_and_check_type(
    simulator: SimulatorServer,
    client: httpx.Client,
    style: str,
    keys: list[str],
    check_as_int: bool,
) -> None:
    simulator.provider.update_config(field_style=style, check_as_int=check_as_int)
    mobile = numbers_with_truth(2, 1)[0]
    body = ask(client, mobile).json()
    assert list(body) == keys
    assert body[keys[0]] == 2000
    assert body[keys[3]] == (2 if check_as_int else "2")
    assert list(ask(client, mobile, "WRONG").json()) == keys[:2]


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_field", "fault", "code"),
    [
        ("internal_error_rate", "internal_error", 5000),
        ("operator_refused_rate", "operator_refused", 5001),
        ("operator_timeout_rate", "operator_timeout", 5002),
        ("odd_code_rate", "odd_code", ODD_CODE),
    ],
)
def test_json_error_faults(
    simulator: SimulatorServer, client: httpx.Client, rate_field: str, fault: str, code: int
) -> None:
    simulator.provider.update_config(**{rate_field: 1.0}, balance=10)
    for mobile in numbers(5):
        response = ask(client, mobile)
        assert response.status_code == 200
        body = response.json()
        assert body["code"] == code
        assert body["msg"]
        assert "order_number" not in body
    entries = simulator.provider.ledger()
    assert {(e.fault, e.code, e.billed) for e in entries} == {(fault, code, False)}
    assert simulator.provider.balance_remaining == 10
    assert simulator.provider.stats().by_fault == {fault: 5}


def test_http_500_fault(simulator: SimulatorServer, client: httpx.Client) -> None:
    simulator.provider.update_config(http_500_rate=1.0)
    response = ask(client, "13912345678")
    assert response.status_code == 500
    with pytest.raises(ValueError, match=r"."):
        response.json()
    (entry,) = simulator.provider.ledger()
    assert (entry.fault, entry.http_status, entry.code, entry.billed) == (
        "http_500",
        500,
        None,
        False,
    )


def _is_contract_json(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and "code" in body


def test_malformed_fault_is_http_200_with_a_body_outside_the_contract(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    simulator.provider.update_config(malformed_rate=1.0)
    bodies = set()
    for mobile in numbers(30):
        response = ask(client, mobile)
        assert response.status_code == 200
        assert not _is_contract_json(response.text)
        bodies.add(response.text)
    assert any("<html>" in b for b in bodies)
    assert any(b.startswith("{") for b in bodies)  # truncated JSON
    assert {(e.fault, e.billed) for e in simulator.provider.ledger()} == {("malformed", False)}


def test_slow_answer_is_billed_even_when_the_client_times_out(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    simulator.provider.update_config(slow_rate=1.0, slow_ms=600, balance=10)
    mobile = numbers_with_truth(1, 1)[0]
    with pytest.raises(httpx.ReadTimeout):
        client.get(
            "/mobile/check/",
            params={"mobile": mobile},
            headers={"token": DEMO_TOKEN},
            timeout=0.15,
        )
    (entry,) = simulator.provider.ledger()
    assert (entry.fault, entry.code, entry.billed) == ("slow", 2000, True)
    assert ORDER_NUMBER.fullmatch(entry.order_number or "")
    assert simulator.provider.balance_remaining == 9

    start = time.monotonic()
    body = ask(client, mobile).json()
    assert time.monotonic() - start >= 0.6
    assert body["code"] == 2000
    assert body["order_number"] != entry.order_number
    assert simulator.provider.balance_remaining == 8


def test_fault_rates_and_draws_are_reproducible_for_a_seed() -> None:
    config = SimulatorConfig(
        latency_ms=0,
        seed=3,
        internal_error_rate=0.2,
        operator_timeout_rate=0.1,
        http_500_rate=0.1,
        slow_rate=0.3,
    )
    sample = numbers(2000)
    runs = []
    for _ in range(2):
        provider = SimulatedProvider(config)
        runs.append([provider.decide(m, DEMO_TOKEN).entry.fault for m in sample])
    assert runs[0] == runs[1]
    counts = collections.Counter(runs[0])
    # ~4 standard deviations over 2000 draws.
    assert counts["internal_error"] == pytest.approx(400, abs=75)
    assert counts["operator_timeout"] == pytest.approx(200, abs=55)
    assert counts["http_500"] == pytest.approx(200, abs=55)
    # Slow applies only to answers (60 % of requests here).
    assert counts["slow"] == pytest.approx(0.3 * 0.6 * 2000, abs=70)
    other = SimulatedProvider(config.replace(seed=4))
    assert [other.decide(m, DEMO_TOKEN).entry.fault for m in sample] != runs[0]


# -- ledger, stats, admin --------------------------------------------------------------


def test_ledger_in_memory_file_and_endpoint_agree(tmp_path: Path) -> None:
    ledger_file = tmp_path / "ledger.jsonl"
    config = SimulatorConfig(latency_ms=0, ledger_path=ledger_file, internal_error_rate=0.2)
    with (
        SimulatorServer(config) as server,
        httpx.Client(base_url=server.base_url, trust_env=False) as c,
    ):
        for mobile in numbers(60):
            ask(c, mobile)
        ask(c, "13912345678", "WRONG")
        ask(c, "not-a-number")
        in_memory = [e.to_dict() for e in server.provider.ledger()]
        from_endpoint = c.get("/_sim/ledger", headers=server.admin_headers).json()
        billed_endpoint = c.get(
            "/_sim/ledger", params={"billed": "1"}, headers=server.admin_headers
        ).json()
        stats = c.get("/_sim/stats", headers=server.admin_headers).json()
        from_file = [json.loads(line) for line in ledger_file.read_text("utf-8").splitlines()]
    assert len(in_memory) == 62
    assert in_memory == from_endpoint == from_file
    assert [e["seq"] for e in in_memory] == list(range(1, 63))
    assert billed_endpoint == [e for e in in_memory if e["billed"]]
    assert billed_endpoint  # the sample has billed answers
    assert all(e["order_number"] and e["code"] == 2000 for e in billed_endpoint)
    assert stats["requests"] == 62
    assert stats["billed"] == len(billed_endpoint)
    assert stats["by_code"]["4001"] == 1
    assert stats["by_code"]["4003"] == 1
    assert stats["by_code"]["5000"] == stats["by_fault"]["internal_error"] > 0
    assert 1 <= stats["max_qps"] <= 61


def test_admin_endpoints_change_config_and_never_reveal_the_token(
    simulator: SimulatorServer, client: httpx.Client
) -> None:
    new_token = "NEWTOKEN" + "7" * 24
    simulator.provider.update_config(token=new_token)  # in Python only: never over HTTP
    response = admin(simulator, "POST", "/_sim/config", json={"seed": 5})
    assert response.status_code == 200
    assert response.json()["seed"] == 5
    assert code_of(ask(client, "13912345678")) == 4001  # the old token is revoked
    assert code_of(ask(client, "13912345678", new_token)) == 2000
    texts = [
        response.text,
        admin(simulator, "GET", "/_sim/config").text,
        admin(simulator, "GET", "/_sim/ledger").text,
        admin(simulator, "GET", "/_sim/stats").text,
    ]
    for text in texts:
        assert new_token not in text
        assert DEMO_TOKEN not in text
    for bad in (
        {"no_such_field": 1},
        {"http_500_rate": 1.5},
        {"internal_error_rate": 0.6, "odd_code_rate": 0.6},
        {"error_http_status": 500},
        {"token": ""},
        {"token": "OTHER" + "0" * 27},
        {"balance": -1},
        {"ledger_path": "/tmp/elsewhere.jsonl"},
        ["not", "an", "object"],
    ):
        refused = admin(simulator, "POST", "/_sim/config", json=bad)
        assert refused.status_code == 400, bad
        assert "error" in refused.json()
    assert simulator.provider.config.seed == 5
    assert simulator.provider.config.token == new_token
    assert admin(simulator, "POST", "/_sim/config", content=b"{not json").status_code == 400


def test_reset_clears_ledger_and_counters(simulator: SimulatorServer, client: httpx.Client) -> None:
    simulator.provider.update_config(balance=3)
    for mobile in numbers(5):
        ask(client, mobile)
    assert simulator.provider.stats().requests == 5
    stats = admin(simulator, "POST", "/_sim/reset").json()
    assert stats["requests"] == stats["billed"] == stats["max_qps"] == 0
    assert stats["balance_remaining"] == 3
    assert admin(simulator, "GET", "/_sim/ledger").json() == []
    ask(client, "13912345678")
    (entry,) = simulator.provider.ledger()
    assert entry.seq == 6  # sequence numbers are never reused


# -- lifecycle ---------------------------------------------------------------------------


def test_stop_and_start_again_on_the_same_port(simulator: SimulatorServer) -> None:
    port, url = simulator.port, simulator.base_url
    with httpx.Client(base_url=url, trust_env=False, timeout=5) as c:
        assert code_of(ask(c, "13912345678")) == 2000
        simulator.stop()
        assert not simulator.running
        with pytest.raises(httpx.TransportError):
            ask(c, "13912345678")
        simulator.start()
        assert (simulator.port, simulator.base_url) == (port, url)
        assert code_of(ask(c, "13912345678")) == 2000
    assert [e.seq for e in simulator.provider.ledger()] == [1, 2]


def test_stop_drops_in_flight_requests(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(latency_ms=5000)
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            with httpx.Client(base_url=simulator.base_url, trust_env=False, timeout=10) as c:
                outcome.append(ask(c, "13912345678").status_code)
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while simulator.provider.stats().requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    simulator.stop()
    thread.join(10)
    assert time.monotonic() - start < 4
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


# -- configuration and command line --------------------------------------------------------


def test_config_validation() -> None:
    assert SimulatorConfig().token == DEMO_TOKEN
    assert len(DEMO_TOKEN) == 32
    for bad in (
        {"latency_ms": -1},
        {"error_http_status": 201},
        {"field_style": "camel"},
        {"qps_limit": 0},
        {"slow_rate": 2.0},
        {"malformed_rate": 0.5, "http_500_rate": 0.6},
        {"check_as_int": "yes"},
        {"seed": 1.5},
    ):
        with pytest.raises(ValueError, match="invalid simulator config"):
            SimulatorConfig(**bad)
    assert "token" not in SimulatorConfig(token="S" * 32).public_dict()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    return parser


def test_arguments_map_to_config() -> None:
    args = _parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8138)
    assert config_from_args(args, {}) == SimulatorConfig()
    args = _parser().parse_args(
        [
            "--port=0",
            "--token=T" + "0" * 31,
            "--latency-ms=0",
            "--jitter-ms=5",
            "--seed=9",
            "--qps-limit=10",
            "--balance=50",
            "--ledger=/tmp/l.jsonl",
            "--error-http-status=202",
            "--field-style=title",
            "--check-as-int",
            "--disabled",
            "--requery-min-interval-s=2",
            "--http-500-rate=0.1",
            "--slow-rate=0.2",
            "--slow-ms=100",
            "--malformed-rate=0.1",
            "--internal-error-rate=0.1",
            "--operator-refused-rate=0.1",
            "--operator-timeout-rate=0.1",
            "--odd-code-rate=0.1",
        ]
    )
    assert config_from_args(args, {}) == SimulatorConfig(
        token="T" + "0" * 31,
        latency_ms=0,
        jitter_ms=5,
        seed=9,
        qps_limit=10,
        balance=50,
        ledger_path="/tmp/l.jsonl",
        error_http_status=202,
        field_style="title",
        check_as_int=True,
        disabled=True,
        requery_min_interval_s=2,
        http_500_rate=0.1,
        slow_rate=0.2,
        slow_ms=100,
        malformed_rate=0.1,
        internal_error_rate=0.1,
        operator_refused_rate=0.1,
        operator_timeout_rate=0.1,
        odd_code_rate=0.1,
    )
    with pytest.raises(SystemExit):
        _parser().parse_args(["--http-500-rate=1.5"])


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")  # noqa: S104
    assert not is_loopback("192.0.2.1")


@contextlib.contextmanager
def _simulator_cli(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m mobile_status_dagster.simulator --port=0 ARGS`` and the two lines it
    printed (listening, admin token); killed on exit if it is still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mobile_status_dagster.simulator", "--port=0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        yield process, first + (process.stdout.readline() if first else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_prints_the_listening_line_serves_and_stops_on_signal(tmp_path: Path) -> None:
    token = "CLI" + "9" * 29
    ledger_file = tmp_path / "cli-ledger.jsonl"
    cli = _simulator_cli("--latency-ms=0", f"--token={token}", f"--ledger={ledger_file}")
    with cli as (process, lines):
        listening, admin_line = lines.splitlines()
        match = LISTENING.fullmatch(listening)
        assert match, lines
        assert int(match.group(2)) > 0
        admin_token = ADMIN_TOKEN.fullmatch(admin_line)
        assert admin_token, lines
        with httpx.Client(base_url=match.group(1), trust_env=False, timeout=10) as c:
            assert code_of(ask(c, "13912345678", token)) == 2000
            assert code_of(ask(c, "13912345678")) == 4001
            assert c.get("/_sim/stats").status_code == 401
            stats = c.get("/_sim/stats", headers={"X-Sim-Admin": admin_token.group(1)})
            assert stats.json()["requests"] == 2
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert out == ""  # exactly two lines, already read
    assert token not in lines + out + err
    entries = [json.loads(x) for x in ledger_file.read_text("utf-8").splitlines()]
    assert [e["code"] for e in entries] == [2000, 4001]


def test_cli_warns_when_binding_beyond_loopback() -> None:
    with _simulator_cli("--host=0.0.0.0", "--latency-ms=0") as (process, lines):
        assert lines.startswith("simulator listening on http://0.0.0.0:")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "warning" in err
    assert "not loopback" in err
