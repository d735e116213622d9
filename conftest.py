"""Session-wide test settings for parity_tests/ and tests/."""

import os

from hypothesis import settings

# run_tests.sh (and so CI) selects "ci": the same examples on every run, so that a red CI run is
# reproducible. Without it hypothesis draws new examples each run and explores further.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
# `bash run_tests.sh --hypothesis-profile thorough`: new random examples on every run, and tests
# that scale their examples by profile (parity_tests/test_schedules_bert.py) draw many more.
settings.register_profile("thorough", deadline=None, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
