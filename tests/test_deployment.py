"""The library as users run it: the webserver and the daemon (``dg dev``), driven over GraphQL.

Each test starts its own ``dg dev`` on a free loopback port, with the simulator as the
provider, and stops every process it started (its own process group), also on failure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from tests.support import (
    DG,
    asked,
    base_env,
    make_dagster_home,
    make_dg_project,
    query,
    run_cli,
    run_dg,
    sample_numbers,
    write_component,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DagsterDev:
    """A ``dg dev`` (webserver + daemon + code server) in its own process group."""

    def __init__(self, command: list[str], *, cwd: Path, env: Mapping[str, str], log: Path):
        self.port = int(command[command.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one group: the webserver, daemon and code servers
            )

    def stop(self) -> None:
        """SIGINT to the whole group (dg dev shuts down cleanly), SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's output, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def graphql(self, document: str, variables: Mapping[str, Any] | None = None) -> Any:
        """The ``data`` of a GraphQL request to the webserver."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": dict(variables or {})},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_until(self, what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
        """Poll ``probe`` until it returns a value; fail with the server log if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dg dev exited ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                value = probe()
                if value is not None:
                    return value
            time.sleep(1)
        pytest.fail(f"timed out waiting for {what}:\n{self.log_tail()}")

    def wait_loaded(self) -> None:
        """Until the code location is loaded (a load error fails the test at once)."""

        def loaded() -> bool | None:
            entries = self.graphql(
                """{ workspaceOrError { ... on Workspace { locationEntries {
                    name loadStatus
                    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
            )["workspaceOrError"]["locationEntries"]
            if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
                return None
            for entry in entries:
                error = entry["locationOrLoadError"]
                assert error["__typename"] == "RepositoryLocation", error
            return True

        self.wait_until("the code location to load", loaded, timeout_s=180)

    def partition_keys(self, asset: list[str]) -> list[str]:
        """The partitions the instance knows for ``asset``."""
        node = self.graphql(
            "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) {"
            " ... on AssetNode { partitionKeys } } }",
            {"k": {"path": asset}},
        )["assetNodeOrError"]
        return list(node["partitionKeys"])

    def launch_backfill(self, asset: list[str], partitions: list[str]) -> str:
        """A backfill of ``partitions``, launched as the UI's "Materialize" button does."""
        result = self.graphql(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message } } }""",
            {"p": {"partitionNames": partitions, "assetSelection": [{"path": asset}]}},
        )["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return str(result["backfillId"])

    def backfill_status(self, backfill_id: str) -> str:
        """``REQUESTED``, ``COMPLETED_SUCCESS``, ``FAILED``, …"""
        return str(
            self.graphql(
                "query($id: String!) { partitionBackfillOrError(backfillId: $id) {"
                " ... on PartitionBackfill { status } } }",
                {"id": backfill_id},
            )["partitionBackfillOrError"]["status"]
        )

    def finished_backfill(self, backfill_id: str) -> str:
        """The backfill's final status, once it is no longer requested."""

        def final() -> str | None:
            status = self.backfill_status(backfill_id)
            return None if status == "REQUESTED" else status

        return self.wait_until(f"backfill {backfill_id} to finish", final, timeout_s=240)

    def runs(self) -> list[dict[str, Any]]:
        """Every run: id, status and tags (as a dict)."""
        results = self.graphql(
            "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
        )["runsOrError"]["results"]
        return [
            {
                "id": r["runId"],
                "status": r["status"],
                "tags": {t["key"]: t["value"] for t in r["tags"]},
            }
            for r in results
        ]

    def materialization_runs(self, asset: list[str]) -> list[str]:
        """Run ids of ``asset``'s latest materializations."""
        data = self.graphql(
            "query($k: AssetKeyInput!) { assetOrError(assetKey: $k) {"
            " ... on Asset { assetMaterializations(limit: 20) { runId } } } }",
            {"k": {"path": asset}},
        )["assetOrError"]
        return [m["runId"] for m in data.get("assetMaterializations", [])]


@contextlib.contextmanager
def dagster_dev(
    command: list[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[DagsterDev]:
    """Start ``command``; always stop its process group."""
    server = DagsterDev(command, cwd=cwd, env=env, log=log)
    try:
        yield server
    finally:
        server.stop()


def write_numbers(path: Path, numbers: list[str]) -> Path:
    """A one-column CSV of ``numbers``."""
    path.write_text("mobile\n" + "\n".join(numbers) + "\n")
    return path


PROJECT_DEFS = """
type: mobile_status_dagster.MobileStatusComponent
attributes:
  database: {database}
  key_prefix: phones
  new_sets_interval_s: 5
  automation_interval_s: 5
  provider:
    base_url: "{{{{ env.MOBILE_STATUS_BASE_URL }}}}"
    token: "{{{{ env.MOBILE_STATUS_TOKEN }}}}"
    unit_price: "0.05"
    max_concurrency: 16
"""


def phone_project(root: Path, database: Path) -> Path:
    """A dg project whose only definitions are one MobileStatusComponent in YAML."""
    make_dg_project(root, "deployed_phones")
    write_component(root, "deployed_phones", "phone_lists", PROJECT_DEFS.format(database=database))
    return root


def test_new_set_sensor_backfill_and_automation_in_a_real_deployment(tmp_path: Path) -> None:
    """Load → the sensor adds the partitions → a UI backfill → automation rebuilds the rest.

    The backfill asks for two sets that are not adjacent in partition order, so it runs
    as two runs (one per contiguous range); the set in between is never paid for, and
    only the derived assets are automated.
    """
    database = tmp_path / "warehouse.duckdb"
    project = phone_project(tmp_path / "project", database)
    sets = {
        "a-leads": sample_numbers(30, seed=1),
        "b-untouched": sample_numbers(20, seed=2),
        "c-signups": sample_numbers(25, seed=3),
    }
    with SimulatorServer(SimulatorConfig(latency_ms=0)) as simulator:
        env = base_env(
            PYTHONPATH=str(project),
            DAGSTER_HOME=str(make_dagster_home(tmp_path / "home")),
            VIRTUAL_ENV=sys.prefix,
            **{settings.BASE_URL: simulator.base_url, settings.TOKEN: DEMO_TOKEN},
        )
        command = [str(DG), "dev", "--host", "127.0.0.1", "--port", str(free_port())]
        with dagster_dev(command, cwd=project, env=env, log=tmp_path / "dg-dev.log") as dev:
            dev.wait_loaded()
            asset = ["phones", "mobile_status"]
            assert dev.partition_keys(asset) == []

            # Loaded from outside the deployment (no DAGSTER_HOME): only the sensor can
            # register the sets.
            for set_id, numbers in sets.items():
                csv = write_numbers(tmp_path / f"{set_id}.csv", numbers)
                loaded = run_cli(
                    "load", str(csv), "--set", set_id, "--db", str(database), env=base_env()
                )
                assert loaded.returncode == 0, loaded.stderr
            dev.wait_until(
                "the sensor to add the sets' partitions",
                lambda: dev.partition_keys(asset) == sorted(sets) or None,
                timeout_s=120,
            )

            backfill = dev.launch_backfill(asset, ["a-leads", "c-signups"])
            status = dev.finished_backfill(backfill)
            assert status == "COMPLETED_SUCCESS", dev.log_tail()
            backfill_runs = [r for r in dev.runs() if r["tags"].get("dagster/backfill") == backfill]
            assert len(backfill_runs) == 2  # two contiguous ranges: one run each
            assert {r["status"] for r in backfill_runs} == {"SUCCESS"}

            for derived in ("mobile_status_summary", "mobile_status_charges"):
                runs = dev.wait_until(
                    f"automation to rebuild {derived}",
                    lambda d=derived: dev.materialization_runs(["phones", d]) or None,  # type: ignore[misc]
                    timeout_s=120,
                )
                by_id = {r["id"]: r for r in dev.runs()}
                automated = by_id[runs[0]]
                assert automated["tags"].get("dagster/from_automation_condition") == "true"
                assert (
                    automated["tags"].get("dagster/sensor_name")
                    == "phones_mobile_status_automation"
                )

            # The paid asset ran only in the backfill's runs: automation never paid.
            paying = {
                r["id"] for r in dev.runs() if r["id"] in set(dev.materialization_runs(asset))
            }
            assert paying <= {r["id"] for r in backfill_runs}

    asked = sorted(str(entry.mobile) for entry in simulator.provider.ledger())
    assert asked == sorted({*sets["a-leads"], *sets["c-signups"]})  # each once, b never
    published = query(database, "SELECT DISTINCT set_id FROM phones_mobile_status ORDER BY 1")
    assert published == [("a-leads",), ("c-signups",)]
    summary = query(database, "SELECT DISTINCT set_id FROM phones_mobile_status_summary ORDER BY 1")
    assert summary == published
    (billed,) = query(database, "SELECT count(*) FROM phones_provider_calls WHERE billed")[0]
    assert billed == len(simulator.provider.ledger(billed_only=True))


def test_the_ui_command_printed_by_the_demo_materializes_against_its_simulator(
    tmp_path: Path,
) -> None:
    """``make demo``'s last line, run as printed (plus a free port), can enrich a new set."""
    demo = tmp_path / "demo"
    result = run_cli("demo", "--dir", str(demo), env=base_env(), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    printed = lines[next(i for i, line in enumerate(lines) if line.startswith("8. ")) + 1]
    command = shlex.split(printed.strip())
    assert Path(command[0]).name == "mobile-status", printed
    assert command[1] == "ui", printed
    port = free_port()
    env = base_env()  # nothing set by hand: the command sets what the UI needs
    with dagster_dev(
        [*command, "--port", str(port)], cwd=REPO, env=env, log=tmp_path / "ui.log"
    ) as ui:
        ui.wait_loaded()
        db = demo / "mobile_status.duckdb"
        new = sample_numbers(15, seed=42)
        csv = write_numbers(tmp_path / "fresh.csv", new)
        home = base_env(DAGSTER_HOME=str(demo / "dagster_home"))
        loaded = run_cli("load", str(csv), "--set", "from-the-ui", "--db", str(db), env=home)
        assert loaded.returncode == 0, loaded.stderr
        backfill = ui.launch_backfill(["mobile_status"], ["from-the-ui"])
        status = ui.finished_backfill(backfill)
        assert status == "COMPLETED_SUCCESS", ui.log_tail()
    rows = query(
        db, "SELECT count(*), count(status_code) FROM mobile_status WHERE set_id = 'from-the-ui'"
    )
    assert rows == [(15, 15)]
    (calls,) = query(
        db, "SELECT count(*) FROM provider_calls WHERE set_id = 'from-the-ui' AND unit_price > 0"
    )[0]
    assert calls >= 15  # paid through the simulator the command started, at the demo's price


def test_dg_commands_from_the_repository_root(tmp_path: Path) -> None:
    """``dg check defs``, ``dg list defs`` and ``dg launch --assets`` work from the repo root."""
    env = base_env(
        DAGSTER_HOME=str(make_dagster_home(tmp_path / "home")),
        VIRTUAL_ENV=sys.prefix,
        **{settings.DB: str(tmp_path / "numbers.duckdb")},
    )
    check = run_dg("check", "defs", cwd=REPO, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    listing = run_dg("list", "defs", cwd=REPO, env=env | {"COLUMNS": "250"})
    assert listing.returncode == 0, listing.stderr
    for name in (
        "mobile_status_summary",
        "mobile_status_charges",
        "mobile_status_new_sets",
        "mobile_status_automation",
        "mobile_status_refresh_stale",
    ):
        assert name in listing.stdout, name
    assert "default_automation_condition_sensor" not in listing.stdout

    numbers = sample_numbers(12, seed=9)
    with SimulatorServer(SimulatorConfig(latency_ms=0)) as simulator:
        run_env = env | {settings.BASE_URL: simulator.base_url, settings.TOKEN: DEMO_TOKEN}
        csv = write_numbers(tmp_path / "s1.csv", numbers)
        loaded = run_cli("load", str(csv), "--set", "s1", env=run_env)
        assert loaded.returncode == 0, loaded.stderr
        launched = run_dg(
            "launch",
            "--assets",
            "mobile_status",
            "--partition",
            "s1",
            cwd=REPO,
            env=run_env,
            timeout=300,
        )
        assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
        assert asked(simulator.provider.ledger()) == sorted(numbers)
    assert query(tmp_path / "numbers.duckdb", "SELECT count(status_code) FROM mobile_status") == [
        (12,)
    ]
