"""``python -m mobile_status_dagster.simulator``: serve the simulator until interrupted."""

import sys

from mobile_status_dagster.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
