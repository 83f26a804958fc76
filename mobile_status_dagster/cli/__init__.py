"""The command line: ``mobile-status`` on top of real Dagster runs.

``main`` is the entry point; ``commands`` holds what the data commands do, ``runs``
launches the materializations, ``demo`` is ``make demo`` and ``mobile-status ui``.
"""

from mobile_status_dagster.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
