"""``python -m mobile_status_dagster``: the ``mobile-status`` command."""

import sys

from mobile_status_dagster.cli import main

if __name__ == "__main__":
    sys.exit(main())
