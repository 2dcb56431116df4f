"""Read and check LightGBM text model files before they enter the model registry.

``read_model_text`` takes text, a path or a ``lightgbm.Booster`` and refuses pickles,
archives and binary files; ``model_text_info`` reads the facts the registry records
(features, objective, classes, tree count) from the header without compiling the model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from scorers.exceptions import RegistryError

__all__ = ["model_text_info", "read_model_text"]


def model_text_info(text: str) -> dict[str, Any]:
    """Facts read from a LightGBM text model's header; ``RegistryError`` if it is not one.

    Returns feature_names, categorical_features (features whose ``feature_infos`` list
    categories), objective, num_class, num_trees and format_version. This is a structural
    check (header keys, tree count, end marker), enough to refuse pickles, truncated
    files and other formats before they reach the registry.
    """
    if not text.startswith("tree\n") and not text.startswith("tree\r\n"):
        raise RegistryError(
            "not a LightGBM text model (it must start with a 'tree' line; save models with "
            "Booster.save_model / model_to_string, pickles are refused)"
        )
    header: dict[str, str] = {}
    for line in text.split("\n", 64)[:64]:
        line = line.strip()
        if line.startswith("Tree="):
            break
        key, sep, value = line.partition("=")
        if sep:
            header[key] = value
    # No "objective=" line means a custom objective (LightGBM writes none then).
    for key in ("version", "num_class", "max_feature_idx", "feature_names"):
        if key not in header:
            raise RegistryError(f"not a LightGBM text model: header has no '{key}=' line")
    if "end of trees" not in text:
        raise RegistryError("truncated LightGBM model: no 'end of trees' marker")
    names = header["feature_names"].split(" ")
    try:
        max_idx = int(header["max_feature_idx"])
        num_class = int(header["num_class"])
    except ValueError as exc:
        raise RegistryError(f"corrupt LightGBM model header: {exc}") from exc
    if len(names) != max_idx + 1:
        raise RegistryError(
            f"corrupt LightGBM model header: {len(names)} feature names for "
            f"max_feature_idx={max_idx}"
        )
    infos = header.get("feature_infos", "").split(" ")
    # Numeric features are written as "[min:max]" (or "none"), categorical ones as the
    # colon-separated list of categories seen in training.
    categorical = [
        n
        for n, info in zip(names, infos, strict=False)
        if info and info != "none" and not info.startswith("[")
    ]
    num_trees = len(re.findall(r"^Tree=\d+", text, flags=re.MULTILINE))
    return {
        "format_version": header["version"],
        "feature_names": names,
        "categorical_features": categorical,
        "objective": header.get("objective", "custom").split(" ")[0],
        "objective_spec": header.get("objective", "custom"),
        "num_class": num_class,
        "num_trees": num_trees,
    }


def read_model_text(model: Any) -> tuple[str, str]:
    """(text, source) of a model given as text, a path or a ``lightgbm.Booster``.

    Refuses pickles, archives, binary files and bytes with a ``RegistryError``.
    """
    if hasattr(model, "model_to_string"):  # a lightgbm.Booster
        return str(model.model_to_string()), "lightgbm.Booster"
    # Model text always spans lines; a one-line string is a path.
    if isinstance(model, os.PathLike) or (isinstance(model, str) and "\n" not in model):
        path = Path(model)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read model file {path}: {exc.strerror}") from exc
        if raw[:1] == b"\x80" or raw[:2] in (b"PK", b"\x1f\x8b"):
            raise RegistryError(
                f"{path} looks like a pickle/archive, not a LightGBM text model; "
                "only text models are accepted (pickles can run arbitrary code)"
            )
        try:
            return raw.decode("utf-8"), str(path.resolve())
        except UnicodeDecodeError as exc:
            raise RegistryError(f"{path} is not a LightGBM text model (not UTF-8 text)") from exc
    if isinstance(model, bytes):
        raise RegistryError("pass the model as text, a path or a Booster, not bytes")
    if isinstance(model, str):
        return model, "text"
    raise RegistryError(f"cannot register a {type(model).__name__} as a model")
