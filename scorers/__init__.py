"""LightGBM models compiled to numba kernels, with explanations and a model registry."""

from scorers.compiled import CompiledModel, compile_lightgbm
from scorers.exceptions import ModelFormatError

__all__ = ["CompiledModel", "ModelFormatError", "compile_lightgbm"]
