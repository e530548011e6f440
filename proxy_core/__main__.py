"""`python -m proxy_core` is `wsproxy`."""

import sys

from proxy_core.cli.main import main

sys.exit(main())
