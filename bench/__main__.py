"""``python -m bench [SCENARIO ...] [--quick]``: run benchmarks, print the table, write JSON."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from bench import client, pipeline, postgres, scale
from bench.report import Figure, print_table, write_json
from mobile_status_dagster.integration.resources import LiteralTokenWarning

SCENARIOS: dict[str, Callable[[bool], list[Figure]]] = {
    "throughput": client.throughput,  # 1 and 2
    "rate-limit": client.rate_limit,  # 3
    "dagster": pipeline.through_dagster,  # 4
    # Planning and the write path run before the skip path publishes a million rows.
    "write-path": pipeline.write_path,  # 7
    "planning": pipeline.planning,  # 6
    "skip-path": pipeline.skip_path,  # 5
    "memory": pipeline.memory,  # 8
    "crash": pipeline.crash_cost,  # 9
    # Scale: the delta scenario seeds the 10M-row warehouse the checks scenario reuses.
    "delta": scale.delta,  # 10
    "publish-scale": scale.publish_scale,  # 11
    "warehouse": scale.warehouse,  # 12
    "checks": scale.checks,  # 13
    # The PostgreSQL store beside the DuckDB store, at the engine level (its own server).
    "postgres": postgres.scenarios,  # 14
}
RESULTS = Path(__file__).with_name("results.json")
QUICK_RESULTS = Path(__file__).with_name("results-quick.json")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios (all by default)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    # The benchmarks hand the simulator's public demo token to the resource on purpose.
    warnings.filterwarnings("ignore", category=LiteralTokenWarning)
    figures: list[Figure] = []
    for name in args.scenarios or list(SCENARIOS):
        print(f"running {name} …", file=sys.stderr, flush=True)
        figures += SCENARIOS[name](args.quick)
    print_table(figures)
    target = QUICK_RESULTS if args.quick else RESULTS
    write_json(target, figures, quick=args.quick)
    print(f"\nwritten to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
