"""The table cache on a shared volume: a bad file never gives a wrong score or a crash.

Each damaged file (truncated, a flipped byte in an index table, another model's file
under this model's name, a wrong-shape array, tables edited and re-signed) must be
rejected, counted, rebuilt from the model text, and the scores be LightGBM's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scorers import compile_lightgbm, tablecache
from tests.scorers.conftest import nasty_rows, train


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    # Categorical splits (bitsets and per-category tables) and several classes.
    return {"multi": train({"objective": "multiclass", "num_class": 3}, "multiclass", rounds=6),
            "binary": train({"objective": "binary"}, "binary", rounds=10)}


def _only_file(where: Path) -> Path:
    files = list(where.glob("*.npz"))
    assert len(files) == 1, files
    return files[0]


def _arrays(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "digest"}


def _rewrite_signed(path: Path, sha: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the tables and store them with a valid digest: only the range checks remain."""
    arrays = _arrays(path)
    edit(arrays)
    tablecache.save(path, sha, arrays)


def _section(U: np.ndarray, i: int) -> slice:
    o = U[3:15].astype(int)
    return slice(o[i], o[i + 1])


def _flip_e_tree(path: Path) -> None:
    """Flip a byte inside the entry-tree index table of the packed buffer, in place."""
    U = _arrays(path)["U"]
    target = U[_section(U, 0)][0].tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(U.tobytes()[:64])  # the packed buffer's bytes inside the zip
    assert at >= 0
    at += _section(U, 0).start * 8 + 7  # the high byte of the first entry's tree index
    assert bytes(data[at - 7:at + 1]) == target
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _damage(kind: str, path: Path, sha: str, other: Path) -> None:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "flipped_index_byte":
        _flip_e_tree(path)
    elif kind == "flipped_index_byte_rezipped":  # past the zip's CRC: the digest catches it
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        U = arrays["U"].copy()
        U[_section(U, 0).start] ^= np.uint64(1)  # another tree, still a valid index
        np.savez(path, **{**arrays, "U": U})
    elif kind == "other_model_renamed":
        other.replace(path)
    elif kind == "wrong_shape_unsigned":
        arrays = _arrays(path)
        arrays["g_left"] = arrays["g_left"][:-1]
        np.savez(path, **arrays)  # no digest at all
    elif kind == "wrong_shape_signed":
        _rewrite_signed(path, sha, lambda a: a.update(g_left=a["g_left"][:-3]))
    elif kind == "tree_index_signed":
        def edit(a: dict[str, Any]) -> None:
            a["U"] = a["U"].copy()
            a["U"][_section(a["U"], 0).start] = 10**9  # a tree that does not exist
        _rewrite_signed(path, sha, edit)
    elif kind == "mask_signed":
        def edit(a: dict[str, Any]) -> None:
            a["U"] = a["U"].copy()
            a["U"][_section(a["U"], 1)] = 0  # clears every leaf, beyond the tree's own too
        _rewrite_signed(path, sha, edit)
    elif kind == "shallow_depth_signed":
        _rewrite_signed(path, sha, lambda a: a.update(g_max_depth=np.int64(1)))
    else:
        raise AssertionError(kind)


KINDS = ["truncated", "flipped_index_byte", "flipped_index_byte_rezipped",
         "other_model_renamed", "wrong_shape_unsigned",
         "wrong_shape_signed", "tree_index_signed", "mask_signed", "shallow_depth_signed"]
REASON = {"truncated": "unreadable", "flipped_index_byte": "unreadable",  # zip CRC
          "flipped_index_byte_rezipped": "digest",
          "other_model_renamed": "digest", "wrong_shape_unsigned": "digest"}


@pytest.mark.parametrize("model", ["multi", "binary"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_cache_file_is_rebuilt_and_scores_stay_lightgbms(
        kind: str, model: str, boosters: dict[str, lgb.Booster], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    booster = boosters[model]
    other = boosters["binary" if model == "multi" else "multi"]
    X = nasty_rows(300)
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    first = compile_lightgbm(booster, cache_dir=mine)
    path = _only_file(mine)
    compile_lightgbm(other, cache_dir=theirs)
    foreign = _only_file(theirs)
    assert compile_lightgbm(booster, cache_dir=mine)._ir is None  # the good file is used

    _damage(kind, path, first.sha256, foreign)
    before = tablecache.rejections()
    with caplog.at_level(logging.WARNING, logger="scorers.tablecache"):
        again = compile_lightgbm(booster, cache_dir=mine)
    after = tablecache.rejections()
    reason = REASON.get(kind, "ranges")
    assert after.get(reason, 0) == before.get(reason, 0) + 1, (before, after)
    assert sum(after.values()) == sum(before.values()) + 1
    assert [r for r in caplog.records if "rejected" in r.getMessage()]
    assert again._ir is not None  # rebuilt from the model text
    for raw in (False, True):
        np.testing.assert_array_equal(again.predict(X, raw_score=raw),
                                      booster.predict(X, raw_score=raw))
    np.testing.assert_allclose(again.contributions(X[:50]),
                               booster.predict(X[:50], pred_contrib=True), rtol=0, atol=1e-9)

    # The rebuilt file replaced the bad one, and is used (verified) from now on.
    assert _only_file(mine) == path
    third = compile_lightgbm(booster, cache_dir=mine)
    assert third._ir is None and tablecache.rejections() == after
    np.testing.assert_array_equal(third.predict(X), booster.predict(X))


def test_a_good_file_passes_every_check(boosters: dict[str, lgb.Booster],
                                        tmp_path: Path) -> None:
    for booster in boosters.values():
        model = compile_lightgbm(booster, cache_dir=tmp_path / "c")
        arrays = tablecache.load(_only_file(tmp_path / "c"), model.sha256)
        assert arrays is not None and arrays["header_facts"]["num_class"] == model.num_class
        for f in (tmp_path / "c").glob("*.npz"):
            f.unlink()


def test_a_cache_key_signs_the_file(boosters: dict[str, lgb.Booster], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    booster = boosters["binary"]
    model = compile_lightgbm(booster, cache_dir=tmp_path)  # written without a key
    monkeypatch.setenv("STREAMSCORE_CACHE_KEY", "k1")
    assert tablecache.load(_only_file(tmp_path), model.sha256) is None
    signed = compile_lightgbm(booster, cache_dir=tmp_path)  # rebuilt and signed with k1
    assert signed._ir is not None
    assert compile_lightgbm(booster, cache_dir=tmp_path)._ir is None
    monkeypatch.setenv("STREAMSCORE_CACHE_KEY", "k2")
    assert tablecache.load(_only_file(tmp_path), model.sha256) is None
