"""The optional training libraries (TRL, peft), imported only when a distillation needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = 'pip install "redumix[distill]" (from a checkout: pip install -e ".[distill]")'


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. "peft"), or say how to install the distill extra.

    Raises:
        ValueError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ValueError(f"{purpose} needs the Python package {top!r}, which is not installed ({err}); "
                         f"install the distill extra: {INSTALL_HINT}") from None
