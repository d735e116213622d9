"""``python -m optax_bertadam``: the same command as ``optax-bertadam``."""

import sys

from optax_bertadam.cli import main

sys.exit(main())
