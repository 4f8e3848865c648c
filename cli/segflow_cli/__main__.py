"""`python -m segflow_cli …` is `segflow …`."""

from __future__ import annotations

import sys

from segflow_cli.main import main

sys.exit(main())
