"""LightGBM models compiled to numba kernels, with explanations and a model registry.

The public names are loaded on first use (module ``__getattr__``): importing numba costs
~0.25 s, which ``streamscore --help``, the registry and the model CLI should not pay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scorers.compiled import CompiledModel, compile_lightgbm
    from scorers.exceptions import ModelFormatError

__all__ = ["CompiledModel", "ModelFormatError", "compile_lightgbm"]

_WHERE = {
    "CompiledModel": "scorers.compiled",
    "compile_lightgbm": "scorers.compiled",
    "ModelFormatError": "scorers.exceptions",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        # Unknown names raise AttributeError, so ``from scorers import kernels`` still
        # falls back to importing the submodule.
        raise AttributeError(f"module 'scorers' has no attribute {name!r}")
    try:
        module = importlib.import_module(where)
    except AttributeError as exc:
        # Re-raised with its cause: an AttributeError escaping here would read as "cannot
        # import name" and hide the real failure inside the submodule.
        raise ImportError(f"importing {where} failed: {exc!r}") from exc
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
