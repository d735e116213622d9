"""``python -m bert_demo demo|schedules|parity``: the main job, run from the repository root."""

import sys

from bert_demo.cli import main

sys.exit(main())
