"""Optional dependencies, imported where they are needed, with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from smner.errors import MissingExtra


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """``module``, or :class:`MissingExtra` saying ``pip install 'smner[extra]'``.

    Optional packages are imported only by the code that needs them, so that smner installs
    and runs without them; the error names what was asked for and how to get it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{purpose} needs {module.split('.')[0]}, an optional dependency of smner: "
            f"pip install 'smner[{extra}]'"
        ) from None
