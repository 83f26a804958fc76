"""A local simulator of the mobile-number status provider, over real HTTP.

It speaks the provider's contract (``GET /mobile/check/?mobile=...`` with a
``token``), answers each number deterministically for a seed, injects faults on
demand, enforces QPS and balance limits, and keeps a ledger of every request
and every billed answer. Tests and benchmarks use it instead of the paid API.

Example::

    from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer

    with SimulatorServer(SimulatorConfig(latency_ms=0)) as server:
        ...  # point a client at server.base_url with DEMO_TOKEN
        billed = server.provider.ledger(billed_only=True)
        stats = httpx.get(server.base_url + "/_sim/stats", headers=server.admin_headers)

The admin endpoints (``/_sim/...``) answer only requests whose ``Host`` names the
server, carrying its per-start admin token in ``X-Sim-Admin``; their POSTs must be
``application/json``, and the account token cannot be changed over HTTP.
"""

from mobile_status_dagster.simulator.app import ADMIN_HEADER, AdminGuard, create_app
from mobile_status_dagster.simulator.cli import (
    add_simulator_arguments,
    config_from_args,
    run_simulator,
)
from mobile_status_dagster.simulator.config import (
    DEMO_TOKEN,
    MAX_DELAY_MS,
    TOKEN_ENV,
    SimulatorConfig,
)
from mobile_status_dagster.simulator.ledger import LedgerEntry
from mobile_status_dagster.simulator.provider import (
    ODD_CODE,
    Reply,
    SimulatedProvider,
    SimulatorStats,
)
from mobile_status_dagster.simulator.server import SimulatorServer
from mobile_status_dagster.simulator.truth import PORTED_RATE, STATUS_MIX, number_truth

__all__ = [
    "ADMIN_HEADER",
    "DEMO_TOKEN",
    "MAX_DELAY_MS",
    "ODD_CODE",
    "PORTED_RATE",
    "STATUS_MIX",
    "TOKEN_ENV",
    "AdminGuard",
    "LedgerEntry",
    "Reply",
    "SimulatedProvider",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorStats",
    "add_simulator_arguments",
    "config_from_args",
    "create_app",
    "number_truth",
    "run_simulator",
]
