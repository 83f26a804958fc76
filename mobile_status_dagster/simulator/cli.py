"""Command-line glue: simulator options for an argparse parser, and the serve loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from mobile_status_dagster.simulator.app import ADMIN_HEADER, new_admin_token
from mobile_status_dagster.simulator.config import (
    DEMO_TOKEN,
    MAX_DELAY_MS,
    TOKEN_ENV,
    SimulatorConfig,
)
from mobile_status_dagster.simulator.provider import SimulatedProvider
from mobile_status_dagster.simulator.server import bind_socket, serve, url_for

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8138

_DEFAULTS = SimulatorConfig()

_FAULT_OPTIONS: tuple[tuple[str, str], ...] = (
    ("http_500_rate", "share of requests answered with a bare HTTP 500"),
    ("slow_rate", "share of answers billed, then delayed by --slow-ms"),
    ("malformed_rate", "share of requests answered HTTP 200 with a non-JSON or truncated body"),
    ("internal_error_rate", "share of requests answered with code 5000"),
    ("operator_refused_rate", "share of requests answered with code 5001"),
    ("operator_timeout_rate", "share of requests answered with code 5002"),
    ("odd_code_rate", "share of requests answered with an undocumented code (4100)"),
)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def _delay_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= MAX_DELAY_MS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_DELAY_MS} ms: {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``.

    Option destinations are the :class:`SimulatorConfig` field names (``--ledger``
    is ``ledger_path``) plus ``host`` and ``port``; read them back with
    :func:`config_from_args` or hand the namespace to :func:`run_simulator`.
    """
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default: %(default)s)")
    add(
        "--token",
        default=None,
        help=(
            f"account token clients must send (default: ${TOKEN_ENV}, else the built-in "
            "demo token); prefer the variable: a command line is visible in ps"
        ),
    )
    add(
        "--latency-ms",
        type=_delay_ms,
        default=_DEFAULTS.latency_ms,
        help=f"delay before every answer, 0..{MAX_DELAY_MS} (default: %(default)s)",
    )
    add(
        "--jitter-ms",
        type=_delay_ms,
        default=_DEFAULTS.jitter_ms,
        help=f"latency varies by up to this either way, 0..{MAX_DELAY_MS} (default: %(default)s)",
    )
    add("--seed", type=int, default=_DEFAULTS.seed, help="truth and fault draws (%(default)s)")
    add("--qps-limit", type=int, default=None, metavar="N", help="answer 4029 above N req/s")
    add("--balance", type=int, default=None, metavar="N", help="answer 4002 after N billed")
    add("--ledger", dest="ledger_path", default=None, metavar="FILE", help="append JSON lines")
    add(
        "--error-http-status",
        type=int,
        choices=(200, 202),
        default=_DEFAULTS.error_http_status,
        help="HTTP status of error answers (default: %(default)s)",
    )
    add(
        "--field-style",
        choices=("lower", "title", "upper"),
        default=_DEFAULTS.field_style,
        help="JSON field spelling: code, Code or CODE (default: %(default)s)",
    )
    add("--check-as-int", action="store_true", help='send check as 1 instead of "1"')
    add("--disabled", action="store_true", help="answer 4004 to everything")
    add(
        "--requery-min-interval-s",
        type=_non_negative,
        default=None,
        metavar="S",
        help="answer 4030 to a number asked again within S seconds",
    )
    for field, text in _FAULT_OPTIONS:
        flag = "--" + field.replace("_", "-")
        add(flag, type=_rate, default=0.0, metavar="RATE", help=text)
    add(
        "--slow-ms",
        type=_delay_ms,
        default=_DEFAULTS.slow_ms,
        help=f"extra delay of a slow answer, 0..{MAX_DELAY_MS} (default: %(default)s)",
    )
    add(
        "--ledger-max-entries",
        type=int,
        default=None,
        metavar="N",
        help="keep only the last N ledger entries in memory (the --ledger file keeps all)",
    )


def token_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The account token: ``--token``, else ``$MOBILE_STATUS_SIMULATOR_TOKEN`` (stripped;
    empty is unset), else the demo token."""
    if args.token is not None:
        return str(args.token)
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV, "").strip() or DEMO_TOKEN


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> SimulatorConfig:
    """The :class:`SimulatorConfig` described by parsed simulator options (and, for the
    token, the environment: see :func:`token_from`)."""
    return SimulatorConfig(
        token=token_from(args, environ),
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        seed=args.seed,
        error_http_status=args.error_http_status,
        field_style=args.field_style,
        check_as_int=args.check_as_int,
        qps_limit=args.qps_limit,
        balance=args.balance,
        disabled=args.disabled,
        requery_min_interval_s=args.requery_min_interval_s,
        slow_ms=args.slow_ms,
        ledger_path=args.ledger_path,
        ledger_max_entries=args.ledger_max_entries,
        **{field: getattr(args, field) for field, _ in _FAULT_OPTIONS},
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only reaches this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def run_simulator(args: argparse.Namespace) -> int:
    """Serve the simulator until SIGINT or SIGTERM; the process exit code.

    Prints two lines once it accepts connections: ``simulator listening on
    http://HOST:PORT`` (the real port when ``--port 0``), then ``simulator admin token:
    TOKEN (...)``, the random per-start token the admin endpoints (``/_sim/...``) need
    in the ``X-Sim-Admin`` header. Never prints the account token.
    """
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.token is not None:
        print(
            f"warning: --token is visible to every local user (ps); set {TOKEN_ENV} instead",
            file=sys.stderr,
        )
    if not is_loopback(args.host):
        print(
            f"warning: binding {args.host}, not loopback: anyone who can reach it can query "
            "the simulator (the admin endpoints still need the admin token)",
            file=sys.stderr,
        )
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    provider = SimulatedProvider(config)
    admin_token = new_admin_token()

    def ready() -> None:
        print(f"simulator listening on {url_for(sock)}")
        print(
            f"simulator admin token: {admin_token} (send it as the {ADMIN_HEADER} header "
            "to /_sim/...)",
            flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        await serve(provider, sock, stop, ready, admin_token=admin_token, host_names=(args.host,))

    with contextlib.suppress(KeyboardInterrupt):  # platforms without loop signal handlers
        asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobile_status_dagster.simulator [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mobile_status_dagster.simulator",
        description="Run a local simulator of the mobile-number status provider.",
    )
    add_simulator_arguments(parser)
    return run_simulator(parser.parse_args(argv))
