"""`python -m vggserve_cli ...`: the same as the `vggserve` console command."""

import sys

from vggserve_cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
