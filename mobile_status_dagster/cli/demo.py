"""``mobile-status demo`` (what ``make demo`` runs): the whole product on embedded defaults.

Seeds a DuckDB file with three overlapping sets of messy numbers, starts the provider
simulator on a free loopback port, enriches every set through real Dagster runs,
enriches again to show that nothing is paid twice, and prints what happened.
"""

import csv
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from mobile_status_dagster.cli.commands import (
    EnrichOutcome,
    enrich_sets,
    export,
    money,
    plan_sets,
    print_plan,
    print_report,
    printable,
)
from mobile_status_dagster.core.engine.enrich import journal_dir_for
from mobile_status_dagster.core.errors import DemoDirectoryError
from mobile_status_dagster.core.files import private_output
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.connection import file_connect
from mobile_status_dagster.core.store.load import load_file
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer

DEMO_PRICE = "0.05"
DB_NAME = "mobile_status.duckdb"
DAGSTER_HOME_NAME = "dagster_home"
EXPORT_NAMES = ("leads-online.csv", "leads-online.parquet")
_PREFIXES = ("139", "138", "186", "189", "133", "150", "177", "198", "166", "192", "170")
_INVALID = ("010-12345678", "12345", "abc", "", "1391234567", "139123456789", "+1 415 555 0100")


def _messy(number: str, rng: random.Random) -> str:
    """The same number as a spreadsheet or a web form would spell it."""
    spellings = (
        lambda n: n,
        lambda n: f"+86 {n[:3]}-{n[3:7]}-{n[7:]}",
        lambda n: f"0086{n}",
        lambda n: f"86{n}",
        lambda n: f"{n}.0",
        lambda n: f"({n[:3]}) {n[3:7]} {n[7:]}",
        lambda n: n.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    )
    return rng.choice(spellings)(number)


def sample_sets(seed: int = 138) -> dict[str, list[str]]:
    """Three overlapping sets (a few thousand numbers), with messy and invalid entries."""
    rng = random.Random(seed)
    pool = [rng.choice(_PREFIXES) + f"{rng.randrange(10**8):08d}" for _ in range(3000)]
    sets = {
        "leads-2026-10": pool[:1400],
        "purchased-list": pool[900:2300],
        "app-signups": pool[2000:] + pool[:300],
    }
    for name, numbers in sets.items():
        messy = [_messy(n, rng) for n in numbers]
        messy += [rng.choice(_INVALID) for _ in range(len(numbers) // 40)]
        rng.shuffle(messy)
        sets[name] = messy
    return sets


def run_demo(directory: Path) -> int:
    """Run the demo in ``directory``; returns the exit code.

    The directory must be new, empty, or one the demo wrote before (it holds the
    :data:`MARKER` file). A rerun deletes exactly the demo's own outputs
    (:func:`demo_outputs`) and leaves every other file in the directory alone.
    """
    _prepare(directory)
    db = directory / DB_NAME
    dagster_home = (directory / DAGSTER_HOME_NAME).resolve()
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home))

    print(
        f"1. seeding {printable(db)} with three overlapping sets "
        "(messy and invalid entries included)"
    )
    for name, numbers in sample_sets().items():
        path = directory / f"{name}.csv"
        with (
            private_output(path) as temporary,
            temporary.open("w", newline="", encoding="utf-8") as handle,
        ):
            writer = csv.writer(handle)
            writer.writerow(["mobile"])
            writer.writerows([n] for n in numbers)
        with file_connect(str(db))() as conn:
            result = load_file(conn, path, set_id=name)
        rejected = sum(result.rejected.values())
        print(
            f"   {printable(name):<16} {result.rows:>5} rows, {result.valid} valid, "
            f"{rejected} rejected"
        )

    deployment = settings.DeploymentSettings(db=str(db), unit_price=DEMO_PRICE)
    print("2. plan: what enriching every set would send and cost (no provider call)")
    print_plan(plan_sets(deployment, set_ids=None, all_sets=True))

    config = SimulatorConfig(latency_ms=50, jitter_ms=10, seed=7)
    with SimulatorServer(config) as simulator:
        print(f"3. provider simulator listening on {simulator.base_url} (50 ms latency)")
        os.environ[settings.BASE_URL] = simulator.base_url
        os.environ[settings.TOKEN] = DEMO_TOKEN
        print("4. enriching every set through Dagster (one run, numbers de-duplicated across sets)")
        first = enrich_sets(deployment, set_ids=None, all_sets=True, log_level="WARNING")
        _print_run(first)
        print("5. enriching again: every answer is fresh in the cache")
        second = enrich_sets(deployment, set_ids=None, all_sets=True, log_level="WARNING")
        _print_run(second)
        ledger = simulator.provider.ledger(billed_only=True)
        print(f"   the simulator's ledger shows {len(ledger)} billed call(s) in total")

    print("6. report: the sorting summary and the charges")
    print_report(str(db), None)
    print("7. export: the usable (online) numbers of one set, as CSV and Parquet")
    for out in (directory / name for name in EXPORT_NAMES):
        written = export(str(db), "leads-2026-10", [Status.ONLINE], out)
        print(f"   wrote {written} numbers to {printable(out)}")
    print(
        "8. open the Dagster UI on the same data, with a simulator to materialize against:\n"
        f"   {printable(ui_command(directory))}\n"
        "   (it starts the simulator on a free loopback port, sets MOBILE_STATUS_BASE_URL,\n"
        "   MOBILE_STATUS_TOKEN, MOBILE_STATUS_UNIT_PRICE, MOBILE_STATUS_DB and DAGSTER_HOME,\n"
        "   and runs `dg dev`; Ctrl-C stops both)"
    )
    return 0 if first.success and second.success else 1


def ui_command(directory: Path) -> str:
    """The command that opens the UI on the demo in ``directory``, as a user types it."""
    command = Path(sys.executable).with_name("mobile-status")
    try:
        shown = command.relative_to(Path.cwd())
    except ValueError:
        shown = command
    default = directory.resolve() == Path(settings.DEFAULT_DEMO_DIR).resolve()
    return f"{shown} ui" + ("" if default else f" --dir {shlex.quote(str(directory))}")


def run_ui(directory: Path, *, port: int = 3000) -> int:
    """Serve the demo's data in the Dagster UI (``dg dev``) beside a simulator.

    Everything the UI needs to materialize is set for the child process: the simulator's
    URL and token, the demo's price, the DuckDB file and the Dagster home. Returns the
    webserver's exit code.
    """
    db = directory / DB_NAME
    if not db.is_file():
        raise DemoDirectoryError(
            f"{printable(db)} does not exist; run `make demo` "
            f"(or `mobile-status demo --dir {printable(directory)}`)"
        )
    dagster_home = (directory / DAGSTER_HOME_NAME).resolve()
    dagster_home.mkdir(exist_ok=True)
    with SimulatorServer(SimulatorConfig(latency_ms=50, jitter_ms=10, seed=7)) as simulator:
        env = os.environ | {
            settings.BASE_URL: simulator.base_url,
            settings.TOKEN: DEMO_TOKEN,
            settings.UNIT_PRICE: DEMO_PRICE,
            settings.DB: str(db.resolve()),
            "DAGSTER_HOME": str(dagster_home),
            "VIRTUAL_ENV": sys.prefix,  # the venv dg should use: the one running this
        }
        command, cwd = dev_server_command(port)
        print(f"provider simulator on {simulator.base_url}; Dagster UI on http://127.0.0.1:{port}")
        with subprocess.Popen(command, cwd=cwd, env=env) as server:  # noqa: S603 - our own dg
            # dg dev shuts its webserver and daemon down on SIGINT; pass SIGTERM on as one.
            previous = signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
            try:
                while True:
                    try:
                        return server.wait()
                    except KeyboardInterrupt:
                        server.send_signal(signal.SIGINT)
            finally:
                signal.signal(signal.SIGTERM, previous)


def dev_server_command(port: int) -> tuple[list[str], Path | None]:
    """``dg dev`` in this repository's dg project, or on the default definitions module.

    From a source checkout (the repository is a dg project) ``dg dev`` runs in its
    root; an installed package has no project, so ``dg dev -m`` loads the module.
    """
    dg = str(Path(sys.executable).with_name("dg"))
    options = ["--host", "127.0.0.1", "--port", str(port)]
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and "[tool.dg]" in pyproject.read_text(encoding="utf-8"):
        return [dg, "dev", *options], root
    return [dg, "dev", "-m", "mobile_status_dagster.integration.definitions", *options], None


MARKER = ".mobile-status-demo"
"""The file that says a directory holds the demo's output, and lists what the demo wrote."""

_MARKER_HEADER = (
    "# written by `mobile-status demo`. A rerun deletes exactly the entries listed below\n"
    "# (files, or folders the demo made) and nothing else in this directory.\n"
)


def demo_outputs() -> tuple[str, ...]:
    """The names, in the demo's directory, of everything the demo (and ``mobile-status ui``
    on its data) writes: the DuckDB file, its WAL and temporary folder, the answer
    journal, the sample CSVs, the exports and the Dagster home."""
    return (
        DB_NAME,
        f"{DB_NAME}.wal",
        f"{DB_NAME}.tmp",  # DuckDB's spill folder, when a query needs one
        journal_dir_for(DB_NAME).name,
        *(f"{name}.csv" for name in sample_sets()),
        *EXPORT_NAMES,
        DAGSTER_HOME_NAME,
    )


def _listed(marker: Path, known: tuple[str, ...]) -> tuple[str, ...]:
    """The known outputs the marker lists; all of them for a marker written before
    markers listed anything. A name the demo does not write (or a path) is never taken."""
    lines = marker.read_text(encoding="utf-8", errors="replace").splitlines()
    names = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    listed = tuple(name for name in known if name in names)
    legacy = not any(line.startswith("#") for line in lines)
    return known if legacy and not listed else listed


def _remove(path: Path) -> bool:
    """Delete ``path`` (a symlink itself, never its target); whether anything was there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False


def _prepare(directory: Path) -> None:
    """Make ``directory`` ready for a run: new, empty, or written by the demo before.

    In a directory the demo wrote before, only the outputs the marker lists are deleted;
    any other file stays, and the demo says which. A non-empty directory without the
    marker is refused (nothing is deleted).
    """
    if directory.exists() and not directory.is_dir():
        raise DemoDirectoryError(f"{printable(directory)} is not a directory; pass --dir")
    marker = directory / MARKER
    if directory.exists() and any(directory.iterdir()):
        if marker.is_symlink() or not marker.is_file():
            raise DemoDirectoryError(
                f"{printable(directory)} is not empty and was not written by the demo; "
                "pass --dir with a new or empty directory"
            )
        removed = [name for name in _listed(marker, demo_outputs()) if _remove(directory / name)]
        kept = sorted(p.name for p in directory.iterdir() if p.name != MARKER)
        print(
            f"removed the previous demo's output from {printable(directory)} "
            f"({', '.join(removed) or 'nothing left'})"
        )
        if kept:
            print(
                f"   kept {len(kept)} file(s) the demo did not write: "
                + ", ".join(printable(name) for name in kept)
            )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(_MARKER_HEADER + "".join(f"{n}\n" for n in demo_outputs()), "utf-8")


def _print_run(outcome: EnrichOutcome) -> None:
    for run in outcome.runs:
        usage = run.usage
        print(
            f"   run {printable(run.run_id[:8])}: "
            f"{'succeeded' if run.success else 'FAILED: ' + printable(run.message)}; "
            f"sent {usage.run_sent_to_provider or 0} numbers to the provider, "
            f"billed {usage.run_billed or 0} ({money(Decimal(str(usage.run_cost or 0)))} "
            f"{printable(usage.currency or '')}), {usage.calls_per_second or 0} calls/s"
        )
