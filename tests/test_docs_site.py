"""The documentation site (docs/, Sphinx + MyST) builds with warnings as errors, and lists every module.

Build command: ``python -m sphinx -E -W -b html docs docs/_build/html``. The docstring examples the
site shows are run by tests/test_docs.py (every module's doctests), not again here.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import optax_bertadam

ROOT = Path(__file__).resolve().parents[1]


def _conf():
    spec = importlib.util.spec_from_file_location("docs_conf", ROOT / "docs" / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_of_the_package_has_a_place_in_the_api_reference():
    listed = {m for _, _, sections in _conf().API_GROUPS.values() for _, modules in sections
              for m in modules}
    modules = {info.name for info in pkgutil.walk_packages(optax_bertadam.__path__,
                                                           prefix="optax_bertadam.")}
    missing = sorted(modules - listed)
    assert not missing, f"add these modules to API_GROUPS in docs/conf.py: {missing}"
    assert not sorted(listed - modules), "API_GROUPS lists modules that do not exist"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")
                   if not p.name.startswith(("genindex", "search", "py-modindex")))
    print(f"{len(pages)} pages in {seconds:.0f} s: {pages}")
    for page in ("index.html", "migrating.html", "examples.html", "demo.html", "quickstart.html",
                 "api/generated/optimizers.html", "api/generated/schedules.html",
                 "api/generated/pytorch.html", "api/generated/checkpoints.html",
                 "api/generated/compare.html"):
        assert page in pages, page
    # The demo's pictures, and the API built from the docstrings (not empty pages).
    assert (out / "_images" / "demo.png").exists() and (out / "_images" / "schedules.png").exists()
    pytorch = (out / "api/generated/pytorch.html").read_text()
    assert "params_from_torch" in pytorch and "OptaxBertAdamWarning" in pytorch
    assert "bertadam" in (out / "api/generated/optimizers.html").read_text()
