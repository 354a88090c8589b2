"""`python -m vggclient.healthcheck` (the Docker HEALTHCHECK): vggclient.cli.healthcheck."""

import sys

from vggclient.cli.healthcheck import main

if __name__ == "__main__":
    sys.exit(main())
