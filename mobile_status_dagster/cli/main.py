"""The ``mobile-status`` command: simulator, load, enrich, plan, report, export, demo."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mobile_status_dagster.core.errors import ConfigurationError, ErrorCategory, MobileStatusError
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import add_simulator_arguments, run_simulator

if TYPE_CHECKING:
    from mobile_status_dagster.integration.store_access import StoreAccess

EXIT_OK = 0
EXIT_STATUS: dict[ErrorCategory, int] = {
    "unfinished": 1,  # a run could not publish everything: numbers left, budget spent
    "input": 2,  # bad input or configuration: a file, a set id, a setting
    "provider": 3,  # the provider refused: token, balance, service, wrong base URL
    "store": 4,  # the store could not be opened or written (paid answers are kept)
    "interrupted": 130,  # SIGTERM or Ctrl-C
}
"""The exit status of ``mobile-status``, by the category of what went wrong."""
EXIT_USAGE = EXIT_STATUS["input"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mobile-status``."""
    parser = argparse.ArgumentParser(
        prog="mobile-status",
        description="Enrich sets of mobile numbers with their live status, through Dagster.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulator = commands.add_parser("simulator", help="run the local provider simulator")
    add_simulator_arguments(simulator)
    simulator.set_defaults(handler=run_simulator)

    load = commands.add_parser("load", help="load a CSV, text or Parquet file into a set")
    load.add_argument("file", type=Path, help="a .csv (with a header), .txt or .parquet file")
    load.add_argument("--set", dest="set_id", required=True, help="the set id to load into")
    load.add_argument(
        "--column", help="column holding the numbers (default: 'mobile', else the first)"
    )
    load.add_argument("--replace", action="store_true", help="replace the set instead of appending")
    _add_db(load)
    load.set_defaults(handler=_load)

    enrich = commands.add_parser("enrich", help="materialize mobile_status for sets")
    _add_set_choice(enrich)
    enrich.add_argument(
        "--force-refresh", action="store_true", help="ask again even for fresh numbers"
    )
    enrich.add_argument(
        "--max-billed", type=int, metavar="N", help="budget: at most N billed calls"
    )
    enrich.add_argument(
        "--quiet", action="store_true", help="no Dagster log; the summary and errors only"
    )
    _add_db(enrich)
    enrich.set_defaults(handler=_enrich)

    plan = commands.add_parser("plan", help="what enriching sets would send and cost (no calls)")
    _add_set_choice(plan)
    plan.add_argument("--force-refresh", action="store_true", help="plan a full refresh")
    _add_db(plan)
    plan.set_defaults(handler=_plan)

    report = commands.add_parser("report", help="status, operator and charges summaries")
    report.add_argument("--set", dest="set_ids", action="append", metavar="ID", help="default: all")
    _add_db(report)
    report.set_defaults(handler=_report)

    export = commands.add_parser("export", help="write a set's numbers of some statuses to a file")
    export.add_argument("--set", dest="set_id", required=True, help="the set to export")
    export.add_argument(
        "--status",
        default="online",
        help="comma-separated statuses (default: online): " + ", ".join(s.label for s in Status),
    )
    export.add_argument("--out", type=Path, required=True, help="a .csv or .parquet file")
    _add_db(export)
    export.set_defaults(handler=_export)

    demo = commands.add_parser("demo", help="seed sample sets, run the simulator, enrich twice")
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path(settings.DEFAULT_DEMO_DIR),
        help="where to write (%(default)s)",
    )
    demo.set_defaults(handler=_demo)

    ui = commands.add_parser(
        "ui", help="open the demo's data in the Dagster UI (dg dev), with a simulator"
    )
    ui.add_argument(
        "--dir",
        type=Path,
        default=Path(settings.DEFAULT_DEMO_DIR),
        help="the demo's directory (%(default)s)",
    )
    ui.add_argument("--port", type=int, default=3000, help="webserver port (%(default)s)")
    ui.set_defaults(handler=_ui)
    return parser


def _add_set_choice(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--set", dest="set_ids", action="append", metavar="ID", help="a set id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every set in the source table")


def _add_db(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", help=f"DuckDB file (default: ${settings.DB} or {settings.DEFAULT_DB})"
    )
    where.add_argument(
        "--store",
        metavar="URL_OR_FILE",
        help=(
            f"the store: postgresql://user@host/dbname or a DuckDB file (default: "
            f"${settings.STORE}, else --db); keep a password out of the command line "
            f"(${settings.STORE} or PGPASSWORD)"
        ),
    )


def _deployment(args: argparse.Namespace) -> settings.DeploymentSettings:
    """The environment's settings, with ``--db`` or ``--store`` when given.

    ``--store postgresql://…`` is ``$MOBILE_STATUS_STORE`` for this process (the runs
    read it as a Dagster ``EnvVar``, so the URL never enters the run storage).
    """
    deployment = settings.DeploymentSettings.from_env()
    if getattr(args, "db", None):
        return dataclasses.replace(deployment, db=args.db, store=None)
    if getattr(args, "store", None):
        db, store = settings.store_location(args.store, deployment.db, setting="--store")
        if store is not None:
            os.environ[settings.STORE] = store
        return dataclasses.replace(deployment, db=db, store=store)
    return deployment


def _store(args: argparse.Namespace) -> StoreAccess:
    from mobile_status_dagster.cli.commands import store_of

    return store_of(_deployment(args))


def _scrubbed(text: str, args: argparse.Namespace | None = None) -> str:
    """``text`` with the password of a PostgreSQL store's URL masked (``--store`` or
    ``$MOBILE_STATUS_STORE``), even a URL too malformed to use."""
    from mobile_status_dagster.core.store.postgres.connection import (
        MASKED,
        PostgresTarget,
        is_postgres_url,
    )

    for url in (getattr(args, "store", None), os.environ.get(settings.STORE)):
        if not url or not is_postgres_url(url.strip()):
            continue
        url = url.strip()
        try:
            text = PostgresTarget(url).scrub(text)
        except (ConfigurationError, ValueError):
            text = text.replace(url, "postgresql://" + MASKED)
            password = _password(url)
            if password:
                text = text.replace(password, MASKED)
    return text


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        return unquote(urlsplit(url).password or "") or None
    except ValueError:
        return None


def _load(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.runs import cli_instance, register_sets
    from mobile_status_dagster.integration.assets import DEFAULT_PARTITIONS_NAME

    result = _store(args).load_file(
        args.file, set_id=args.set_id, column=args.column, replace=args.replace
    )
    register_sets(cli_instance(), DEFAULT_PARTITIONS_NAME, [result.set_id])
    rejected = sum(result.rejected.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in result.rejected.items())
    print(
        f"loaded {result.rows} row(s) into set {result.set_id!r}: {result.valid} valid, "
        f"{rejected} rejected{f' ({reasons})' if reasons else ''}"
    )
    return EXIT_OK


def _enrich(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.commands import enrich_sets, print_summary, store_of

    settings.require_provider_env()
    deployment = _deployment(args)
    outcome = enrich_sets(
        deployment,
        set_ids=args.set_ids,
        all_sets=args.all,
        force_refresh=args.force_refresh,
        max_billed=args.max_billed,
        # --quiet: the command's own one-line error says why a run failed.
        log_level="CRITICAL" if args.quiet else "INFO",
    )
    print_summary(store_of(deployment), outcome)
    for run in outcome.runs:
        if not run.success:
            print(
                _scrubbed(f"error: run {run.run_id} ({', '.join(run.set_ids)}): {run.message}"),
                file=sys.stderr,
            )
    failed = [run for run in outcome.runs if not run.success]
    return EXIT_STATUS[failed[0].category or "unfinished"] if failed else EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.commands import plan_sets, print_plan

    estimate = plan_sets(
        _deployment(args), set_ids=args.set_ids, all_sets=args.all, force_refresh=args.force_refresh
    )
    print_plan(estimate)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.commands import print_report

    print_report(_store(args), args.set_ids)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.commands import export

    try:
        statuses = [Status.from_label(s) for s in args.status.split(",") if s.strip()]
    except ValueError as error:
        raise ConfigurationError("--status", str(error)) from None
    if not statuses:
        raise ConfigurationError("--status", "name at least one status")
    written = export(_store(args), args.set_id, statuses, args.out)
    labels = ",".join(s.label for s in statuses)
    print(f"wrote {written} number(s) of set {args.set_id!r} with status {labels} to {args.out}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.demo import run_demo

    return run_demo(args.dir)


def _ui(args: argparse.Namespace) -> int:
    from mobile_status_dagster.cli.demo import run_ui

    return run_ui(args.dir, port=args.port)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mobile-status`` and ``python -m mobile_status_dagster``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except MobileStatusError as error:
        print(_scrubbed(f"error: {error}", args), file=sys.stderr)
        return EXIT_STATUS[error.category]
    return code
