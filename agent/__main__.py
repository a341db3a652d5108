"""`python -m agent` runs the guardian-agent command line."""

import sys

from agent.cli import main

sys.exit(main())
