"""`python -m agent.notify` is guardian-notify."""

import sys

from agent.notify.cli import main

sys.exit(main())
