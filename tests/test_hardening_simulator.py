"""Hardening of the simulator's admin endpoints, the demo's rerun and terminal output.

- the admin endpoints (``/_sim/...``) over real HTTP on loopback: JSON-only POSTs, a
  ``Host`` naming the server, the per-start admin token, no account token over HTTP,
  bounded delays (over HTTP and on the command line), the account token from
  ``MOBILE_STATUS_SIMULATOR_TOKEN`` and not from a ``ps``-visible argv;
- ``mobile-status demo`` rerun in a directory holding a user's files: only its own go;
- ``mobile-status report`` on data holding control characters prints none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from mobile_status_dagster.cli.commands import printable
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, SOURCE_DDL, ensure_schema
from mobile_status_dagster.simulator import (
    ADMIN_HEADER,
    DEMO_TOKEN,
    MAX_DELAY_MS,
    TOKEN_ENV,
    SimulatorConfig,
    SimulatorServer,
    add_simulator_arguments,
)
from tests.support import COMMAND, base_env, run_cli

LISTENING = re.compile(r"simulator listening on (http://127\.0\.0\.1:\d+)")
ADMIN_LINE = re.compile(r"simulator admin token: (\S+) ")
MOBILE = "13912345678"

GETS = ("/_sim/ledger", "/_sim/stats", "/_sim/config")
POSTS = ("/_sim/config", "/_sim/reset")


def admin(
    sim: SimulatorServer,
    method: str,
    path: str,
    *,
    token: str | None = "right",  # noqa: S107 - "use the server's admin token"
    host: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """An admin request: the right admin token (``token="right"``), another one, or none;
    ``host`` overrides the ``Host`` header."""
    headers: dict[str, str] = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers[ADMIN_HEADER] = sim.admin_token if token == "right" else token
    if host is not None:
        headers["Host"] = host
    return httpx.request(
        method, sim.base_url + path, headers=headers, timeout=10, trust_env=False, **kwargs
    )


def ask(sim: SimulatorServer, token: str = DEMO_TOKEN, **headers: str) -> int:
    """The provider's ``code`` for one ``/mobile/check/`` request."""
    response = httpx.get(
        sim.base_url + "/mobile/check/",
        params={"mobile": MOBILE},
        headers={"token": token, **headers},
        timeout=10,
        trust_env=False,
    )
    code = response.json()["code"]
    assert isinstance(code, int)
    return code


# --- 1. the admin endpoints ---------------------------------------------------------------


def test_a_text_plain_post_is_refused(simulator: SimulatorServer) -> None:
    """The cross-site "simple request": no preflight, so it must fail on its own."""
    before = simulator.provider.config
    body = '{"latency_ms": 30000, "balance": 0}'
    for path in POSTS:
        # As a page sends it: no admin token, text/plain.
        blind = admin(
            simulator,
            "POST",
            path,
            token=None,
            content=body,
            headers={"Content-Type": "text/plain"},
        )
        assert blind.status_code in (401, 403, 415), path
        # Even with the admin token, the body must be declared JSON.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {} if content_type is None else {"Content-Type": content_type}
            refused = admin(simulator, "POST", path, content=body, headers=headers)
            assert refused.status_code == 415, (path, content_type)
    assert simulator.provider.config == before
    ok = admin(simulator, "POST", "/_sim/config", json={"balance": 7})
    assert ok.status_code == 200
    assert simulator.provider.config.balance == 7


def test_a_host_that_does_not_name_the_server_is_refused(simulator: SimulatorServer) -> None:
    """DNS rebinding: the page's own name (and port) arrive in ``Host``."""
    port = simulator.port
    for host in (
        f"attacker.example:{port}",
        "attacker.example",
        f"127.0.0.1.attacker.example:{port}",
        f"localhost:{port + 1}",
        "127.0.0.1",  # port 80
        f"[::1]:{port + 1}",
        f"::1:{port}",  # an unbracketed IPv6 address is malformed
        f"192.0.2.7:{port}",  # not the address the server bound
    ):
        for path in GETS:
            refused = admin(simulator, "GET", path, host=host)
            assert refused.status_code in (403, 421), (host, path)
            assert "error" in refused.json()
        refused = admin(simulator, "POST", "/_sim/config", host=host, json={"balance": 0})
        assert refused.status_code in (403, 421), host
    assert simulator.provider.config.balance is None
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert admin(simulator, "GET", "/_sim/stats", host=host).status_code == 200, host
    # The provider endpoint keeps the contract: its token is the account token, whatever Host.
    assert ask(simulator, Host=f"attacker.example:{port}") == 2000


def test_the_admin_token_is_required_and_sufficient(simulator: SimulatorServer) -> None:
    token = simulator.admin_token
    assert len(token) >= 32
    assert token != SimulatorServer().admin_token  # random per server
    assert token != DEMO_TOKEN
    for bad in (None, "", "wrong", token[:-1], token + "x", token.upper(), DEMO_TOKEN):
        for path in GETS:
            assert admin(simulator, "GET", path, token=bad).status_code == 401, (bad, path)
        for path in POSTS:
            refused = admin(simulator, "POST", path, token=bad, json={"balance": 0})
            assert refused.status_code == 401, (bad, path)
    assert simulator.provider.config.balance is None
    ask(simulator)
    assert simulator.provider.stats().requests == 1  # the refused reset did nothing
    for path in GETS:
        assert admin(simulator, "GET", path).status_code == 200, path
    assert admin(simulator, "POST", "/_sim/config", json={"balance": 3}).status_code == 200
    assert admin(simulator, "POST", "/_sim/reset", json={}).status_code == 200
    assert simulator.provider.stats().requests == 0
    # The admin token is not an account token, and the account token is not an admin one.
    assert ask(simulator, token) == 4001
    assert simulator.admin_headers == {ADMIN_HEADER: token}
    # Nothing grants a browser page the right to send it: no CORS header, ever.
    preflight = httpx.options(
        simulator.base_url + "/_sim/config",
        headers={"Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"},
        trust_env=False,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_the_admin_token_survives_a_restart_and_can_be_chosen() -> None:
    chosen = "A" * 43
    with SimulatorServer(SimulatorConfig(latency_ms=0), admin_token=chosen) as sim:
        assert sim.admin_token == chosen
        sim.stop()
        sim.start()
        assert admin(sim, "GET", "/_sim/stats").status_code == 200
        assert admin(sim, "GET", "/_sim/stats", token="B" * 43).status_code == 401
    with pytest.raises(ValueError, match="admin token"):
        SimulatorServer(admin_token="short")


def test_the_account_token_cannot_be_set_over_http(simulator: SimulatorServer) -> None:
    for body in (
        {"token": "ATTACKER" + "0" * 24},
        {"token": "ATTACKER" + "0" * 24, "seed": 9},
        {"Token": "ATTACKER" + "0" * 24},  # not a field: refused as unknown
    ):
        refused = admin(simulator, "POST", "/_sim/config", json=body)
        assert refused.status_code in (400, 403), body
        assert "error" in refused.json()
    assert simulator.provider.config.token == DEMO_TOKEN
    assert simulator.provider.config.seed == 0
    assert ask(simulator) == 2000
    assert ask(simulator, "ATTACKER" + "0" * 24) == 4001


@pytest.mark.parametrize("field", ["latency_ms", "jitter_ms", "slow_ms"])
def test_delays_over_http_are_bounded(simulator: SimulatorServer, field: str) -> None:
    before = simulator.provider.config
    for bad in (MAX_DELAY_MS + 1, 10**9, 1e308, -1, -0.5, "100", True, None):
        refused = admin(simulator, "POST", "/_sim/config", json={field: bad})
        assert refused.status_code == 400, (field, bad)
        assert str(MAX_DELAY_MS) in refused.json()["error"]
    assert simulator.provider.config == before
    assert admin(simulator, "POST", "/_sim/config", json={field: MAX_DELAY_MS}).status_code == 200
    assert getattr(simulator.provider.config, field) == MAX_DELAY_MS
    with pytest.raises(ValueError, match=field):
        SimulatorConfig().replace(**{field: MAX_DELAY_MS + 1})


@pytest.mark.parametrize("option", ["--latency-ms", "--jitter-ms", "--slow-ms"])
def test_delays_on_the_command_line_are_bounded(option: str) -> None:
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    for bad in (str(MAX_DELAY_MS + 1), "1e9", "inf", "nan", "-1"):
        with pytest.raises(SystemExit):
            parser.parse_args([f"{option}={bad}"])
    parsed = parser.parse_args([f"{option}={MAX_DELAY_MS}"])
    assert getattr(parsed, option[2:].replace("-", "_")) == MAX_DELAY_MS
    # And as a user runs it: a usage error before anything is bound.
    result = run_cli("simulator", "--port=0", f"{option}=3600000", env=base_env(), timeout=60)
    assert result.returncode == 2
    assert str(MAX_DELAY_MS) in result.stderr
    assert "listening" not in result.stdout


def _lines(process: subprocess.Popen[str], count: int, timeout: float = 30) -> list[str]:
    """The first ``count`` lines ``process`` prints (fewer if it stops printing)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for _ in range(count):
            lines.put(process.stdout.readline())

    threading.Thread(target=read, daemon=True).start()
    out: list[str] = []
    with contextlib.suppress(queue.Empty):
        for _ in range(count):
            out.append(lines.get(timeout=timeout))
    return out


@contextlib.contextmanager
def simulator_command(*args: str, env: dict[str, str]) -> Iterator[tuple[int, str, str]]:
    """``mobile-status simulator --port=0 ARGS``: its pid, base URL and admin token."""
    process = subprocess.Popen(
        [str(COMMAND), "simulator", "--port=0", "--latency-ms=0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        printed = "".join(_lines(process, 2))
        listening = LISTENING.search(printed)
        admin_line = ADMIN_LINE.search(printed)
        assert listening, printed
        assert admin_line, printed
        yield process.pid, listening.group(1), admin_line.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_account_token_comes_from_the_environment_not_the_command_line() -> None:
    secret = "ENVTOKEN" + "5" * 24
    env = base_env(**{TOKEN_ENV: secret})
    with simulator_command(env=env) as (pid, url, admin_token):
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as c:
            asked = [
                c.get("/mobile/check/", params={"mobile": MOBILE}, headers={"token": t}).json()
                for t in (secret, DEMO_TOKEN)
            ]
            assert [a["code"] for a in asked] == [2000, 4001]
            stats = c.get("/_sim/stats", headers={ADMIN_HEADER: admin_token}).json()
            assert stats["requests"] == 2
            assert secret not in c.get("/_sim/config", headers={ADMIN_HEADER: admin_token}).text
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():  # what ps shows
            argv = cmdline.read_bytes().split(b"\0")
            assert any(b"simulator" in a for a in argv), argv
            assert not any(secret.encode() in a for a in argv), argv
    # --token is still accepted (and wins), with a warning that ps shows it; the
    # unresolvable --host makes the command stop right after the warnings.
    other = "ARGTOKEN" + "6" * 24
    warned = run_cli("simulator", "--host=256.0.0.1", f"--token={other}", env=env, timeout=60)
    assert warned.returncode == 1, warned.stderr
    assert "(ps)" in warned.stderr
    assert TOKEN_ENV in warned.stderr
    assert other not in warned.stdout + warned.stderr


def test_the_simulator_command_prints_the_admin_token_and_docs_name_the_variable() -> None:
    with simulator_command(env=base_env()) as (_, url, admin_token):
        assert len(admin_token) >= 32
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as c:
            assert c.get("/_sim/stats").status_code == 401
            assert c.get("/_sim/stats", headers={ADMIN_HEADER: admin_token}).status_code == 200
    with simulator_command(env=base_env()) as (_, _, again):
        assert again != admin_token  # per start
    docs = (Path(__file__).parents[1] / "docs" / "simulator.md").read_text(encoding="utf-8")
    assert TOKEN_ENV in docs
    assert ADMIN_HEADER in docs


# --- 2. the demo's rerun ------------------------------------------------------------------


def test_a_demo_rerun_removes_only_what_the_demo_wrote(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    first = run_cli("demo", "--dir", str(directory), env=base_env(), cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    written = {p.name for p in directory.iterdir()}
    assert {"mobile_status.duckdb", "dagster_home", "leads-online.csv"} <= written
    marker = directory / ".mobile-status-demo"
    listed = {line for line in marker.read_text().splitlines() if not line.startswith("#")}
    assert written - {marker.name} <= listed  # the marker lists everything the demo wrote

    precious = directory / "thesis.txt"
    precious.write_text("years of work\n", encoding="utf-8")
    (directory / "notes").mkdir()
    (directory / "notes" / "draft.md").write_text("draft\n", encoding="utf-8")
    (directory / "leads-online.csv").write_text("stale export\n", encoding="utf-8")

    second = run_cli("demo", "--dir", str(directory), env=base_env(), cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert precious.read_text(encoding="utf-8") == "years of work\n"
    assert (directory / "notes" / "draft.md").read_text(encoding="utf-8") == "draft\n"
    assert "stale export" not in (directory / "leads-online.csv").read_text(encoding="utf-8")
    # The old database went too: the rerun started from nothing and paid as much again.
    billed = [re.findall(r"billed (\d+) ", r.stdout)[0] for r in (first, second)]
    assert billed[0] == billed[1] != "0"
    after = {p.name for p in directory.iterdir()}
    assert after - written <= {"thesis.txt", "notes"} | listed
    assert {"thesis.txt", "notes", "mobile_status.duckdb", "dagster_home"} <= after
    kept = [line for line in second.stdout.splitlines() if "kept" in line]
    assert kept, second.stdout
    assert "thesis.txt" in kept[0]
    assert "notes" in kept[0]
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", second.stdout, flags=re.MULTILINE)]
    assert steps == list(range(1, len(steps) + 1))


# --- 3. control characters never reach the terminal ---------------------------------------

HOSTILE_OPERATOR = "\x1b[31mCM\r\n"
HOSTILE_SET = "evil\x1b]0;owned\x07\r\x00\u202eset\x9b2J"
HOSTILE_STATUS = "online\x1b[2J"


def _terminal_safe(text: str) -> bool:
    """Every line is printable (the only control character is the newline ending it)."""
    return all(line.isprintable() for line in text.split("\n"))


def test_printable_escapes_every_non_printable_character() -> None:
    assert printable(HOSTILE_OPERATOR) == r"\x1b[31mCM\r\n"
    assert printable("中国移动 CM-1") == "中国移动 CM-1"
    for ch in map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x202E, 0xFEFF]):
        assert printable(f"a{ch}b").isprintable(), hex(ord(ch))


def test_report_prints_no_control_character_from_the_data(tmp_path: Path) -> None:
    db = tmp_path / "hostile.duckdb"
    now = datetime.now(UTC)
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        conn.execute(SOURCE_DDL)
        conn.executemany(
            "INSERT INTO number_sets (set_id, mobile) VALUES (?, ?)",
            [(HOSTILE_SET, MOBILE), (HOSTILE_SET, "13812345678"), ("plain", "13712345678")],
        )
        published = [
            (HOSTILE_SET, MOBILE, MOBILE, True, 1, "online", HOSTILE_OPERATOR, "CM", True),
            (HOSTILE_SET, "13812345678", "13812345678", True, 1, HOSTILE_STATUS, "CU", "CM", True),
            (
                "plain",
                "13712345678",
                "13712345678",
                True,
                1,
                "online",
                HOSTILE_OPERATOR,
                "CM",
                True,
            ),
        ]
        conn.executemany(
            "INSERT INTO mobile_status (set_id, mobile_raw, mobile, valid, status_code, status, "
            "operator, prefix_operator, ported, order_number, checked_at, source, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ORDER', ?, 'provider', 'run\x1b[0m')",
            [(*row, now) for row in published],
        )
        conn.execute(
            "INSERT INTO provider_calls (order_number, mobile, provider_code, status_code, "
            "operator, billed, possibly_billed, unit_price, currency, set_id, run_id, "
            "requested_at, attempt) VALUES ('ORDER', ?, 2000, 1, ?, true, false, ?, ?, ?, "
            "'run', ?, 1)",
            [MOBILE, HOSTILE_OPERATOR, Decimal("0.05"), "CNY\x1b[5m\n", HOSTILE_SET, now],
        )
    result = run_cli("report", "--db", str(db), env=base_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert _terminal_safe(out), repr(out)
    for control in ("\x1b", "\r", "\x00", "\x07", "\x9b", "\u202e"):
        assert control not in out
    assert r"\x1b[31mCM\r\n 2" in result.stdout  # shown escaped, and counted once per row
    assert printable(HOSTILE_SET) in result.stdout
    assert printable(HOSTILE_STATUS) in result.stdout
    assert r"CNY\x1b[5m\n" in result.stdout

    # The plan prints set ids from the source table; an error lists the known ones.
    plan = run_cli("plan", "--all", "--db", str(db), env=base_env(), timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert _terminal_safe(plan.stdout + plan.stderr), repr(plan.stdout)
    assert printable(HOSTILE_SET) in plan.stdout
    unknown = run_cli("plan", "--set", "nope", "--db", str(db), env=base_env(), timeout=120)
    assert unknown.returncode == 2, unknown.stderr
    assert _terminal_safe(unknown.stdout + unknown.stderr), repr(unknown.stderr)
    assert printable(HOSTILE_SET) in unknown.stderr
