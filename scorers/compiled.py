"""``compile_lightgbm`` and ``CompiledModel``: the scorer's public surface.

Orchestrates parse (``textmodel``) → tables (``kernels``) → numba kernels, and owns the
per-call contract: check the input once, allocate the output once, call compiled code.
LightGBM is never called here; it is only the test oracle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scorers import blockwalk, kernels, tablecache, walker
from scorers.exceptions import ModelFormatError
from scorers.ir import ModelIR
from scorers.objectives import transform_code
from scorers.textmodel import parse_model

__all__ = ["CompiledModel", "Reasons", "compile_lightgbm", "default_cache_dir"]

F64 = npt.NDArray[np.float64]
_F64 = np.dtype(np.float64)  # builtin dtypes are singletons: an identity test suffices


def _read_model(model: Any) -> bytes:
    """Model text bytes from a path, the text itself, or a ``lightgbm.Booster``."""
    if hasattr(model, "model_to_string"):
        return str(model.model_to_string()).encode()
    if isinstance(model, bytes):
        return model
    if isinstance(model, str) and "\n" in model:  # paths have no newlines; model text does
        return model.encode()
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelFormatError(f"model file not found: {path}") from exc
        except OSError as exc:
            shown = str(path)[:200]
            raise ModelFormatError(f"cannot read model file {shown}: {exc.strerror}") from exc
    raise TypeError(f"cannot compile a {type(model).__name__}: pass a path, model text or Booster")


@dataclass(frozen=True)
class Reasons:
    """Top-k reason codes for a batch, as arrays (rows × k); ``index`` -1 = no reason.

    ``contribution`` is in raw-score units, ``value`` is the row's feature value.
    """

    index: npt.NDArray[np.int64]
    contribution: F64
    value: F64
    feature_names: list[str]

    def names(self) -> list[list[str]]:
        """Feature names per row (shorter than k when fewer features push the score up)."""
        return [[self.feature_names[i] for i in row if i >= 0] for row in self.index.tolist()]

    def rows(self) -> list[list[tuple[str, float, float]]]:
        """Per row: ``(feature name, value, contribution)`` tuples, largest first."""
        return [
            [(self.feature_names[i], float(v), float(c))
             for i, v, c in zip(idx, vals, cons, strict=True) if i >= 0]
            for idx, vals, cons in zip(self.index.tolist(), self.value.tolist(),
                                       self.contribution.tolist(), strict=True)
        ]


class CompiledModel:
    """A LightGBM model compiled to numba kernels; predicts what ``Booster.predict`` does.

    ``kernel`` is ``"quickscorer"`` (all trees <= 64 constant leaves) or ``"blockwalk"``
    (deeper or linear trees; ``scorers.blockwalk``).
    ``parallel=True`` spreads large batches over threads (prange); results are identical.
    """

    def __init__(self, text: bytes, *, parallel: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.sha256 = hashlib.sha256(text).hexdigest()
        try:
            self._text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFormatError("model text is not UTF-8") from exc
        self.parallel = parallel
        self._ir: ModelIR | None = None
        self._general: walker.GeneralTables | None = None
        self._qs: kernels.QSTables | None = None
        self._expected: F64 | None = None
        self._means: F64 | None = None
        self._local = threading.local()
        # Tables cached on disk are reused only by the kernels that built them, and only
        # once verified against this model's sha256 (scorers.tablecache).
        path = (Path(cache_dir) / f"{self.sha256[:32]}-{tablecache.kernel_tag()}.npz"
                if cache_dir is not None else None)
        cached = tablecache.load(path, self.sha256) if path is not None else None
        if cached is not None:
            # Seen before: the text was parsed and checked when these tables were built
            # (same sha256), so the trees are parsed only if something needs them (Saabas,
            # the general kernel, qs_tables). A restart skips ~0.1 s per 500 trees, and
            # the TreeSHAP tables come from the cache as well.
            self._U, self._F = cached["U"], cached["F"]
            header = cached["header_facts"]
            self._restore_explainer(cached)
        else:
            header = _header(self.ir)
        self.feature_names: list[str] = list(header["feature_names"])
        self.num_features = len(self.feature_names)
        self.num_class = int(header["num_class"])
        self.num_trees = int(header["num_trees"])
        self.objective = str(header["objective"])
        self.pandas_categorical = header["pandas_categorical"]
        self._k = int(header["num_tree_per_iteration"])
        self._code, self._param = transform_code(self.objective, self.num_class)
        iterations = self.num_trees // max(self._k, 1)
        self._divide = float(max(iterations, 1)) if header["average_output"] else 1.0
        # A rule, not a per-model measurement: wherever QuickScorer applies (<= 64
        # constant leaves) it beat the block walk on every shape measured, e.g. x LightGBM
        # at batch 1 / 512: 63 leaves 4.8 / 6.9 vs 3.5 / 3.1; 31 leaves 4.9 / 10.1 vs
        # 3.3 / 3.2; 63 leaves x 500 features 4.2 / 3.7 vs 3.8 / 1.9.
        self._qs_fast = cached is not None or kernels.qs_supported(self.ir)
        if self._qs_fast:
            self.kernel = "quickscorer"
            if cached is None:
                self._U, self._F = self._packed_tables(path, header)
        else:
            self.kernel = "blockwalk"
            g = self._general_tables()
            b = blockwalk.build_block_tables(g)
            self._b_args = (b.word, b.thr, b.root, b.depth, b.leaf, g.catbits, b.has_cat,
                            g.tree_class, g.is_linear, g.leafvals, g.lin_const, g.lin_start,
                            g.lin_feat, g.lin_coeff)

    @property
    def ir(self) -> ModelIR:
        """The parsed model (parsed on first use when the tables came from the cache)."""
        if self._ir is None:
            self._ir = parse_model(self._text)
        return self._ir

    @property
    def qs_tables(self) -> kernels.QSTables:
        """The QuickScorer tables (built on demand; scoring uses the packed buffers)."""
        if self._qs is None:
            self._qs = kernels.build_qs_tables(self.ir)
        return self._qs

    def _packed_tables(self, path: Path | None, header: dict[str, Any]
                       ) -> tuple[npt.NDArray[np.uint64], F64]:
        """Build the packed QuickScorer tables and keep them (with the header) at ``path``.

        The key is the model's sha256 plus a hash of the kernel modules, so a changed
        table layout never loads stale tables. A restarted worker skips parse and build.
        """
        U, F = kernels.pack_qs(self.qs_tables, self.ir.num_features, self._divide, self._code,
                               self._param)
        F[kernels.PAD_MIN] = self._padding_threshold(U, F)
        if path is not None:
            meta = np.frombuffer(json.dumps(header).encode(), np.uint8)
            # TreeSHAP's node tables and expected values ride along: a worker warms
            # contributions at start-up, and without them that would parse every tree.
            from scorers.shap import expected_values

            if self._expected is None:
                self._expected = expected_values(self.ir)
            g = self._general_tables()
            extra = {f"g_{f.name}": np.asarray(getattr(g, f.name))
                     for f in dataclasses.fields(g)}
            tablecache.save(path, self.sha256,
                            {"U": U, "F": F, "header": meta, "expected": self._expected, **extra})
        return U, F

    def _padding_threshold(self, U: npt.NDArray[np.uint64], F: F64) -> int:
        """Fewest leftover rows (after the last full block) worth scoring as a padded block.

        A 16-row SIMD block costs as much as a few rows of the scalar path: ~7 on the
        pricing-like model, ~12 on the fraud-like one, where per-category tables (no
        SIMD) weigh more. Measured here once per model (~1 ms; cached with the tables)
        on rows drawn from the model's own split thresholds. Either path gives the same
        bits; only the speed depends on this.
        """
        import time

        rng = np.random.default_rng(0)
        rows = np.full((kernels.BLOCK - 1, self.num_features), np.nan)
        for j, values in enumerate(_split_values(self.ir)):
            if values.size:
                rows[:, j] = rng.choice(values, rows.shape[0]) + 1e-9
        v = np.empty(max(self.num_trees, 1) * kernels.BLOCK, np.uint64)
        xb = np.empty(kernels.BLOCK)
        out = np.empty(rows.shape[0] * self._k)
        cost = {}
        for pad_min in (kernels.BLOCK, 1):  # all scalar; one padded block
            F[kernels.PAD_MIN] = pad_min
            best = np.inf
            for _ in range(5):
                t = time.perf_counter()
                kernels.qs_predict_packed(rows, out, U, F, True, v, xb)
                best = min(best, time.perf_counter() - t)
            cost[pad_min] = best
        per_row = cost[kernels.BLOCK] / rows.shape[0]
        return int(min(kernels.BLOCK, max(1, np.ceil(cost[1] / max(per_row, 1e-12)))))

    def _general_tables(self) -> walker.GeneralTables:
        if self._general is None:
            self._set_general(walker.build_general_tables(self.ir))
        assert self._general is not None
        return self._general

    def _set_general(self, g: walker.GeneralTables) -> None:
        self._general = g
        self._g_args = (g.node_off, g.feat, g.thr, g.dtype, g.left, g.right, g.cat_off,
                        g.cat_nw, g.catbits, g.leaf_off, g.leafvals, g.tree_class,
                        g.is_linear, g.lin_const, g.lin_start, g.lin_feat, g.lin_coeff)

    def _restore_explainer(self, cached: dict[str, Any]) -> None:
        """TreeSHAP's tables from the cache, when it has them all (else built on demand)."""
        names = [f.name for f in dataclasses.fields(walker.GeneralTables)]
        if "expected" not in cached or any(f"g_{n}" not in cached for n in names):
            return
        fields: dict[str, Any] = {n: cached[f"g_{n}"] for n in names}
        fields["max_depth"] = int(fields["max_depth"])
        self._set_general(walker.GeneralTables(**fields))
        self._expected = cached["expected"]

    # ------------------------------------------------------------------ input

    def _matrix(self, X: Any) -> F64:
        """X as a C-contiguous float64 (rows × num_features) matrix, or a clear ValueError."""
        if type(X) is np.ndarray:
            if (X.dtype == np.float64 and X.ndim == 2 and X.shape[1] == self.num_features
                    and X.flags.c_contiguous):
                return X  # the hot path: nothing to convert
        elif hasattr(X, "columns") and hasattr(X, "dtypes"):
            return self._from_pandas(X)
        arr = np.asarray(X)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"X must be numeric, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D (rows × features), got {arr.ndim}-D")
        if arr.shape[1] != self.num_features:
            raise ValueError(f"X has {arr.shape[1]} columns but the model has "
                             f"{self.num_features} features")
        return np.ascontiguousarray(arr, dtype=np.float64)

    def _from_pandas(self, df: Any) -> F64:
        import pandas as pd

        missing = [n for n in self.feature_names if n not in df.columns]
        if missing:
            raise ValueError(f"DataFrame lacks the model's features: {', '.join(missing[:5])}")
        df = df[self.feature_names]
        cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
        if cats:
            df = df.copy(deep=False)
            known = self.pandas_categorical or []
            if len(known) != len(cats):
                raise ValueError(f"DataFrame has {len(cats)} categorical columns, the model "
                                 f"was trained with {len(known)}")
            for col, categories in zip(cats, known, strict=True):
                codes = df[col].cat.set_categories(categories).cat.codes.astype(np.float64)
                df[col] = codes.where(codes >= 0, np.nan)
        bad = [c for c in df.columns if df[c].dtype.kind not in "fiub"]
        if bad:
            raise ValueError(f"non-numeric columns: {', '.join(map(str, bad[:5]))}")
        return np.ascontiguousarray(df.to_numpy(dtype=np.float64, na_value=np.nan))

    def _scratch(self) -> tuple[npt.NDArray[np.uint64], F64]:
        local = self._local
        try:
            return local.v, local.xb  # type: ignore[no-any-return]
        except AttributeError:
            local.v = np.empty(max(self.num_trees, 1) * kernels.BLOCK, np.uint64)
            local.xb = np.empty(kernels.BLOCK, np.float64)
            return local.v, local.xb

    # ------------------------------------------------------------------ scoring

    def predict(self, X: Any, raw_score: bool = False) -> F64:
        """Scores of every row: what ``Booster.predict(X, raw_score=...)`` returns."""
        # The batch-1 hot path costs ~4 µs in all, so the usual input (a C-contiguous
        # float64 matrix of the right width) is recognised inline; anything else is
        # converted or refused by _matrix.
        x = X
        if not (type(X) is np.ndarray and X.dtype is _F64 and X.ndim == 2
                and X.shape[1] == self.num_features and X.flags.c_contiguous):
            x = self._matrix(X)
        n = x.shape[0]
        if self._qs_fast:
            out = np.empty(n * self._k)  # zero-filled by the kernel
            if self.parallel and n >= 4 * kernels.BLOCK * 8:
                kernels.qs_predict_parallel(x, out, self._U, self._F, raw_score)
            else:
                local = self._local
                try:
                    v, xb = local.v, local.xb
                except AttributeError:
                    v, xb = self._scratch()
                kernels.qs_predict_packed(x, out, self._U, self._F, raw_score, v, xb)
            return out if self._k == 1 else out.reshape(n, self._k)
        out2 = np.zeros((n, self._k))
        blockwalk.block_predict(x, out2, *self._b_args, raw_score, self._divide, self._code,
                                self._param)
        return out2[:, 0] if self._k == 1 else out2

    def predict_sweep(self, X_base: Any, cand_cols: Any, cand_values: Any,
                      raw_score: bool = False) -> F64:
        """Scores of every event under every candidate value of a few columns.

        ``X_base`` is events × features; ``cand_cols`` the columns the candidates set
        (feature indices or names); ``cand_values`` events × candidates × len(cand_cols),
        or candidates × len(cand_cols) for the same candidates on every event. Returns
        events × candidates (× classes for multiclass): exactly what ``predict`` gives on
        the rows with those columns replaced (``scorers.candidates.expand``).
        The splits on the other columns are evaluated once per event (QuickScorer
        models); other models score the expanded rows.
        """
        from scorers import candidates

        x = self._matrix(X_base)
        names = {name: i for i, name in enumerate(self.feature_names)}
        try:
            cols = np.array([names[c] if isinstance(c, str) else int(c)
                             for c in np.atleast_1d(np.asarray(cand_cols, dtype=object))],
                            np.int64)
        except KeyError as exc:
            raise ValueError(f"cand_cols: no feature named {exc.args[0]!r}") from exc
        if cols.size == 0 or np.unique(cols).size != cols.size or not (
                (cols >= 0) & (cols < self.num_features)).all():
            raise ValueError("cand_cols must be distinct feature indices or names")
        vals = np.asarray(cand_values, dtype=np.float64)
        if vals.ndim == 2:
            vals = np.broadcast_to(vals, (x.shape[0], *vals.shape))
        if vals.ndim != 3 or vals.shape[0] != x.shape[0] or vals.shape[2] != cols.size:
            raise ValueError(f"cand_values must be events × candidates × {cols.size} "
                             f"(or candidates × {cols.size}), got {vals.shape}")
        vals = np.ascontiguousarray(vals)
        n, c = vals.shape[0], vals.shape[1]
        if not self._qs_fast:
            out = self.predict(candidates.expand(x, cols, vals), raw_score=raw_score)
            return out.reshape(n, c, *out.shape[1:])
        out = np.empty((n * c, self._k))
        v, _ = self._scratch()  # trees × BLOCK words: the event's masks, then the block
        vb = np.empty_like(v)
        candidates.qs_sweep(x, cols, vals, out, self._U, self._F, raw_score, v, vb)
        return out.reshape(n, c) if self._k == 1 else out.reshape(n, c, self._k)

    def predict_general(self, X: Any, raw_score: bool = False) -> F64:
        """Same as ``predict`` through the node-walking kernel (cross-check, benchmarks)."""
        x = self._matrix(X)
        self._general_tables()
        out = np.zeros((x.shape[0], self._k))
        walker.general_predict(x, out, *self._g_args, raw_score, self._divide, self._code,
                                self._param)
        return out[:, 0] if self._k == 1 else out

    def contributions(self, X: Any, method: str = "treeshap") -> F64:
        """Per-feature contributions, rows × classes·(features + 1), bias last per class.

        ``"treeshap"`` (default): exact TreeSHAP, what ``Booster.predict(X,
        pred_contrib=True)`` returns. ``"saabas"``: path attribution (``scorers.saabas``),
        one tree walk per row; it also sums to the raw score but is not a Shapley value.
        """
        if method not in ("treeshap", "saabas"):
            raise ValueError(f"method must be 'treeshap' or 'saabas', got {method!r}")
        from scorers.shap import expected_values, shap_contributions

        if self._general_tables().is_linear.any():
            raise ModelFormatError("feature contributions are not defined for linear trees "
                                   "(LightGBM refuses them too)")
        x = self._matrix(X)
        if self._expected is None:
            self._expected = expected_values(self.ir)
        if method == "saabas":
            from scorers.saabas import node_means, saabas_contributions

            if self._means is None:
                self._means = node_means(self.ir, self._expected)
            return saabas_contributions(x, self._general_tables(), self._means,
                                        self._expected, self.num_features, self._k)
        return shap_contributions(x, self._general_tables(), self._expected,
                                  self.num_features, self._k)

    def reasons(self, X: Any, k: int = 3, class_index: int | None = None,
                method: str = "treeshap") -> Reasons:
        """Top-k features pushing each row's score up (largest positive contributions).

        For multiclass models the class explained is ``class_index``, else each row's
        highest-scoring class. Contributions are in raw-score (e.g. log-odds) units,
        from exact TreeSHAP or, with ``method="saabas"``, from the cheaper path
        attribution (see ``contributions``).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        x = self._matrix(X)
        contrib = self.contributions(x, method=method)
        nf = self.num_features
        k = min(k, nf)
        if self._k > 1:
            if class_index is None:
                cls = np.argmax(self.predict(x, raw_score=True), axis=1)
            else:
                if not 0 <= class_index < self._k:
                    raise ValueError(f"class_index must be in 0..{self._k - 1}")
                cls = np.full(x.shape[0], class_index)
            blocks = contrib.reshape(x.shape[0], self._k, nf + 1)
            per_row = blocks[np.arange(x.shape[0]), cls, :nf]
        else:
            per_row = contrib[:, :nf]
        order = np.argsort(-per_row, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(per_row, order, axis=1)
        index = np.where(top > 0, order, -1)
        return Reasons(index=index, contribution=np.where(top > 0, top, 0.0),
                       value=np.take_along_axis(x, order, axis=1),
                       feature_names=self.feature_names)

    def __repr__(self) -> str:
        return (f"CompiledModel(trees={self.num_trees}, features={self.num_features}, "
                f"classes={self.num_class}, objective={self.objective!r}, "
                f"kernel={self.kernel!r}, sha256={self.sha256[:12]})")


def _header(ir: ModelIR) -> dict[str, Any]:
    """What ``CompiledModel`` needs besides the tables (kept in the table cache)."""
    return {"feature_names": list(ir.feature_names), "num_class": ir.num_class,
            "num_trees": len(ir.trees), "objective": ir.objective,
            "pandas_categorical": ir.pandas_categorical,
            "num_tree_per_iteration": ir.num_tree_per_iteration,
            "average_output": ir.average_output}


def _split_values(ir: ModelIR) -> list[F64]:
    """Per feature, the thresholds it splits on (small codes for categorical features)."""
    trees = [t for t in ir.trees if t.num_internal > 0]
    if not trees:
        return [np.zeros(0)] * ir.num_features
    feat = np.concatenate([t.split_feature[:t.num_internal] for t in trees])
    thr = np.concatenate([t.threshold[:t.num_internal] for t in trees])
    cat = np.concatenate([(t.decision_type[:t.num_internal] & 1) != 0 for t in trees])
    out: list[F64] = []
    for f in range(ir.num_features):
        mine = feat == f
        if (mine & cat).any():
            out.append(np.arange(8.0))
        else:
            out.append(thr[mine])
    return out


def default_cache_dir() -> Path:
    """``$STREAMSCORE_HOME/cache/scorer`` (``./.streamscore`` when the variable is unset)."""
    return Path(os.environ.get("STREAMSCORE_HOME", ".streamscore")) / "cache" / "scorer"


def compile_lightgbm(model: Any, *, parallel: bool = False,
                     cache_dir: str | os.PathLike[str] | bool | None = True) -> CompiledModel:
    """Compile a LightGBM model (path, model text or ``Booster``) to a ``CompiledModel``.

    ``cache_dir``: where built tables are kept between processes (``True``: the default
    under ``$STREAMSCORE_HOME``; ``None``/``False``: no disk cache). numba's own JIT cache
    is ``features.jitcache.cache_dir()``, keyed by the kernels' sources.
    """
    where: str | os.PathLike[str] | None
    if cache_dir is True:
        where = default_cache_dir()
    elif cache_dir is False:
        where = None
    else:
        where = cache_dir
    return CompiledModel(_read_model(model), parallel=parallel, cache_dir=where)
