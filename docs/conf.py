"""Sphinx configuration: the optax-bertadam documentation site.

Built from the docstrings (autodoc + napoleon: Google style) and the README's sections (MyST
markdown, included by heading). Build: ``python -m sphinx -W -b html docs docs/_build/html``
(tests/test_docs_site.py builds it with warnings as errors). The docstring examples are run by
tests/test_docs.py, not here.

The API reference is generated from :data:`API_GROUPS` below, grouped the way a user looks for
things: a new module of the package is one more entry in one group (test_docs_site.py fails on a
module of ``optax_bertadam`` that no group lists).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's optax_bertadam

project = "optax-bertadam"
author = "optax-bertadam developers"
copyright = "optax-bertadam developers"  # noqa: A001  (Sphinx's name)

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_title = "optax-bertadam"
html_theme_options = {"description": "BERT-era PyTorch optimizers and schedules as optax "
                                     "transformations, with step-by-step parity tests",
                      "page_width": "1100px", "sidebar_width": "240px"}

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "description"
autodoc_mock_imports = ["torch", "transformers", "deepspeed"]  # imported lazily anyway
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # NamedTuple "Attributes:" as fields, not duplicate attribute entries
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
# The README's sections start at "##" when included under a page title.
suppress_warnings = ["myst.header"]

# Page slug -> (title, introduction, [(section title, [module, ...]), ...]).
API_GROUPS: dict[str, tuple[str, str, list[tuple[str, list[str]]]]] = {
    "optimizers": (
        "Optimizers and transforms",
        "Each optimizer is a short ``optax.chain`` of the public transforms; masks choose what "
        "weight decay applies to; parameter groups reproduce PyTorch's.",
        [("Optimizers", ["optax_bertadam.optimizers"]),
         ("LAMB: DeepSpeed's FusedLamb and NVIDIA's", ["optax_bertadam.lamb"]),
         ("Building blocks", ["optax_bertadam.transforms"]),
         ("Weight-decay masks", ["optax_bertadam.masks"]),
         ("Parameter groups", ["optax_bertadam.param_groups"]),
         ("Reading the learning rate", ["optax_bertadam.lr"]),
         ("The registry", ["optax_bertadam.algorithms"])],
    ),
    "schedules": (
        "Schedules, by family",
        "Every schedule is a pure function ``count -> learning rate``.",
        [("Overview", ["optax_bertadam.schedules"]),
         ("BertAdam's schedules", ["optax_bertadam.schedules.bert"]),
         ("transformers' schedulers", ["optax_bertadam.schedules.transformers"]),
         ("torch.optim.lr_scheduler", ["optax_bertadam.schedules.pytorch"]),
         ("DeepSpeed's schedules", ["optax_bertadam.schedules.deepspeed"]),
         ("Loss-driven: ReduceLROnPlateau and GreedyLR", ["optax_bertadam.schedules.loss_driven"]),
         ("Tutorial and classic formulas", ["optax_bertadam.schedules.classic"]),
         ("The registry", ["optax_bertadam.schedules.registry", "optax_bertadam.schedules._common"])],
    ),
    "pytorch": (
        "PyTorch interop",
        "Parameters, optimizer state and live optimizers/schedulers between PyTorch and JAX; the "
        "answers to PyTorch habits and the package's warnings.",
        [("Parameters", ["optax_bertadam.torch_params"]),
         ("A live optimizer and scheduler", ["optax_bertadam.from_torch"]),
         ("The catalogue of PyTorch-side classes", ["optax_bertadam.catalogue"]),
         ("DeepSpeed: a config or a live engine", ["optax_bertadam.deepspeed"]),
         ("The bing_bert pretraining recipe", ["optax_bertadam.recipes"]),
         ("The transformers Trainer", ["optax_bertadam.trainer"]),
         ("Optimizer state", ["optax_bertadam.torch_state"]),
         ("Argument checks, PyTorch habits and warnings", ["optax_bertadam._validation"])],
    ),
    "checkpoints": (
        "Checkpoints and mixed precision",
        "Verified orbax checkpoints; dynamic loss scaling and skipped non-finite steps.",
        [("Checkpoints", ["optax_bertadam.checkpoint"]),
         ("Mixed precision", ["optax_bertadam.mixed_precision"])],
    ),
    "compare": (
        "Comparing a port with its PyTorch run",
        "``compare_training``: where a JAX port parts from its PyTorch run, stage by stage.",
        [("compare_training", ["optax_bertadam.compare"])],
    ),
}


def _write_api_pages(app) -> None:  # noqa: ARG001  (Sphinx's signature)
    out = DOCS / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    for slug, (title, intro, sections) in API_GROUPS.items():
        lines = [title, "=" * len(title), "", intro, ""]
        for section, modules in sections:
            lines += [section, "-" * len(section), ""]
            for module in modules:
                lines += [f".. automodule:: {module}", ""]
        text = "\n".join(lines)
        page = out / f"{slug}.rst"
        if not page.exists() or page.read_text() != text:  # unchanged pages keep their mtime
            page.write_text(text)


def setup(app):
    app.connect("builder-inited", _write_api_pages)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
