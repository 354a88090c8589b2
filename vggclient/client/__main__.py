"""`python -m vggclient.client IMAGE...`: the command line is vggclient.cli.classify."""

import sys

from vggclient.cli.classify import main

sys.exit(main())
