"""`python -m vggclient.batch`: the command line is vggclient.batch.cli."""

import sys

from vggclient.batch.cli import main

sys.exit(main())
