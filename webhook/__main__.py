"""`python -m webhook` is the `webhook` command."""

import sys

from webhook.cli import main

sys.exit(main())
