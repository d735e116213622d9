"""``timm.optim.lamb.Lamb`` without importing ``timm`` (which pulls in torchvision).

timm is installed without its dependencies; ``import timm`` imports its models and so
torchvision, which is not installed. The optimizer module needs only torch and its siblings
``timm/optim/_helpers.py`` and ``_types.py``: stub ``timm`` and ``timm.optim`` packages (their
``__path__`` the installed folders, so the relative imports resolve) let it load alone, under its
real name, so that ``Lamb.__module__ == "timm.optim.lamb"`` as in a full installation (which is
what ``optax_bertadam.from_torch`` recognises). A full ``timm`` already imported is used as is.

The registry names ``parity_tests.timm_lamb.Lamb`` as ``nvidia_lamb``'s PyTorch counterpart.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types


def _load_lamb_module() -> types.ModuleType:
    if "timm.optim.lamb" in sys.modules:
        return sys.modules["timm.optim.lamb"]
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed: pip install --no-deps timm")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("timm", root), ("timm.optim", os.path.join(root, "optim"))):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
    return importlib.import_module("timm.optim.lamb")


Lamb = _load_lamb_module().Lamb

__all__ = ["Lamb"]
