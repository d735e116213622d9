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

# Many tests compile the same update (the same optimizer on the same shapes) through different
# Python objects, which jax.jit's in-memory cache cannot see: the persistent compilation cache,
# keyed by the compiled program, lets both pytest-xdist workers reuse one another's programs.
# Results are bit-identical (the same executable); only compile time is saved.
import jax  # noqa: E402

_CACHE_DIR = os.path.join(os.path.dirname(__file__), ".pytest_cache", "jax")
jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", _CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Tests run in parallel workers (pytest-xdist), one per core or more: torch's intra-op threads
# would only make them contend. The tensors here are small; one thread changes no result.
import torch  # noqa: E402

torch.set_num_threads(1)
