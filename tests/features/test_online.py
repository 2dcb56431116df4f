"""The fast reader against Feast's own get_online_features, on the real Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from features.exceptions import FeatureRepoError
from features.online import OnlineReader

Repo = Any  # tests/features/conftest.py:TestRepo

pytestmark = pytest.mark.integration

CARD = [
    "avg_amount",
    "txn_count_7d",
    "chargebacks",
    "risk_score",
    "is_premium",
    "country",
    "opened_at",
]
NUMERIC_REFS = (
    [f"card_history:{f}" for f in CARD]
    + ["merchant_risk:fraud_rate", "merchant_risk:category", "merchant_risk:volume"]
    + ["card_merchant:pair_count", "card_merchant:pair_amount"]
)
# every value type of the repo, lists and bytes included (read_dict only)
ALL_REFS = [*NUMERIC_REFS, "card_history:recent_amounts", "card_history:tags", "card_history:blob"]


def _rows(repo: Repo, n: int, seed: int) -> tuple[list[int], list[str]]:
    """Random known entities, repeats, and unknown ones (about 15% each side)."""
    rng = np.random.default_rng(seed)
    cards = [int(c) for c in rng.choice(repo.card_ids, n)]
    merchants = [str(m) for m in rng.choice(repo.merchant_ids, n)]
    # pair rows exist only for (card_ids[i], merchant_ids[i]): use some of those too
    for i in rng.choice(n, n // 5, replace=False):
        k = int(rng.integers(0, len(repo.merchant_ids)))
        cards[i], merchants[i] = int(repo.card_ids[k]), repo.merchant_ids[k]
    for i in rng.choice(n, n // 7, replace=False):
        cards[i] = int(rng.integers(10**12, 10**13))
    for i in rng.choice(n, n // 7, replace=False):
        merchants[i] = f"unknown-{i}"
    return cards, merchants


def _as_float(vocab: dict[str, list[str]], feature: str, value: Any) -> float:
    """What the model sees for one SDK value: numbers, 0/1, epoch seconds, vocab codes."""
    if value is None:
        return np.nan
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        values = vocab.get(feature, [])
        return float(values.index(value)) if value in values else np.nan
    return float(value)


def check_read_dict(repo: Repo, n: int, seed: int) -> dict[str, list[Any]]:
    """``read_dict`` of every value type equals the SDK's dict, types included; the dict."""
    reader = OnlineReader(repo.path, ALL_REFS, strict=False, timeout_ms=5000)
    cards, merchants = _rows(repo, n, seed=seed)
    rows = [{"card_id": c, "merchant_id": m} for c, m in zip(cards, merchants, strict=True)]
    want: dict[str, list[Any]] = repo.store.get_online_features(
        features=ALL_REFS, entity_rows=rows
    ).to_dict()
    got = reader.read_dict(rows)
    reader.close()
    assert list(got) == list(want)
    for key in want:
        assert got[key] == want[key], key
        assert [type(v) for v in got[key]] == [type(v) for v in want[key]], key
    return want


def test_read_dict_equals_sdk_on_every_value_type(big_repo: Repo) -> None:
    want = check_read_dict(big_repo, 2500, seed=1)
    # the data really holds missing values and every type
    assert any(v is None for v in want["avg_amount"]) and any(v is None for v in want["fraud_rate"])


def test_read_matrix_equals_sdk_values(big_repo: Repo) -> None:
    reader = OnlineReader(big_repo.path, NUMERIC_REFS, timeout_ms=5000)
    cards, merchants = _rows(big_repo, 3000, seed=2)
    rows = [{"card_id": c, "merchant_id": m} for c, m in zip(cards, merchants, strict=True)]
    want = big_repo.store.get_online_features(features=NUMERIC_REFS, entity_rows=rows).to_dict()
    res = reader.read({"card_id": np.array(cards), "merchant_id": merchants})
    assert res.ok and res.values.shape == (3000, len(NUMERIC_REFS))
    for col, ref in enumerate(NUMERIC_REFS):
        feature = ref.split(":")[1]
        expected = np.array([_as_float(big_repo.vocab, feature, v) for v in want[feature]])
        np.testing.assert_array_equal(res.values[:, col], expected, err_msg=ref)
    # presence per view: unknown cards and merchants are flagged, known ones are not
    known_cards = np.isin(cards, big_repo.card_ids)
    known_merchants = np.isin(merchants, big_repo.merchant_ids)
    assert res.views == ("card_history", "merchant_risk", "card_merchant")
    np.testing.assert_array_equal(res.present[:, 0], known_cards)
    np.testing.assert_array_equal(res.present[:, 1], known_merchants)
    assert 0 < res.present[:, 2].sum() < 3000
    assert not res.stale.any()
    assert np.all((res.age[known_cards, 0] >= 0) & (res.age[known_cards, 0] < 86400 + 600))
    assert np.isnan(res.age[~known_cards, 0]).all()
    # string features came out as vocabulary codes, unknown strings as NaN
    cat = res.values[:, NUMERIC_REFS.index("merchant_risk:category")]
    assert set(np.unique(cat[~np.isnan(cat)])) <= {0.0, 1.0, 2.0, 3.0}
    reader.close()


def test_small_and_large_batches_agree(big_repo: Repo) -> None:
    """Small batches build keys with a dict, large ones with numpy: same answers (600 rows
    also need several recvs and a grown reply buffer)."""
    reader = OnlineReader(big_repo.path, NUMERIC_REFS, timeout_ms=5000)
    cards, merchants = _rows(big_repo, 600, seed=9)
    big = reader.read({"card_id": np.array(cards), "merchant_id": merchants})
    for lo in range(0, 600, 7):  # 7 rows stay under the numpy key-building limit
        part = reader.read({"card_id": cards[lo : lo + 7], "merchant_id": merchants[lo : lo + 7]})
        np.testing.assert_array_equal(part.values, big.values[lo : lo + 7])
        np.testing.assert_array_equal(part.present, big.present[lo : lo + 7])
    reader.close()


def test_order_of_refs_and_single_entity(big_repo: Repo) -> None:
    refs = ["merchant_risk:volume", "card_history:txn_count_7d", "merchant_risk:fraud_rate"]
    reader = OnlineReader(big_repo.path, refs, timeout_ms=5000)
    card, merchant = int(big_repo.card_ids[3]), big_repo.merchant_ids[3]
    want = big_repo.store.get_online_features(
        features=refs, entity_rows=[{"card_id": card, "merchant_id": merchant}]
    ).to_dict()
    res = reader.read({"card_id": [card], "merchant_id": [merchant]})
    assert res.values.tolist() == [[float(want[r.split(":")[1]][0]) for r in refs]]
    assert reader.read({"card_id": [], "merchant_id": []}).values.shape == (0, 3)
    reader.close()


def test_bad_references_fail_at_start(big_repo: Repo) -> None:
    with pytest.raises(FeatureRepoError, match="unknown feature reference"):
        OnlineReader(big_repo.path, ["nope:x"])
    with pytest.raises(FeatureRepoError, match="no feature"):
        OnlineReader(big_repo.path, ["card_history:nope"])
    with pytest.raises(FeatureRepoError, match="float matrix"):
        OnlineReader(big_repo.path, ["card_history:tags"])


def test_ttl_expiry(feast_repo: Repo) -> None:
    """Rows older than the view's TTL read as NaN + stale; Feast itself still returns them."""
    import pandas as pd

    card, merchant = int(feast_repo.card_ids[0]), "ttl-merchant"
    ttl = timedelta(days=30)  # card_merchant's TTL
    born = datetime.now(UTC) - ttl + timedelta(seconds=1.5)
    feast_repo.store.write_to_online_store(
        "card_merchant",
        pd.DataFrame(
            {
                "card_id": [card],
                "merchant_id": [merchant],
                "pair_count": [7],
                "pair_amount": np.array([1.5], np.float32),
                "event_timestamp": [born],
            }
        ),
    )
    refs = ["card_merchant:pair_count", "card_history:avg_amount"]
    reader = OnlineReader(feast_repo.path, refs, timeout_ms=5000)
    entities = {"card_id": [card], "merchant_id": [merchant]}
    fresh = reader.read(entities)
    assert reader.views == ("card_merchant", "card_history")  # first-appearance order
    assert fresh.values[0, 0] == 7.0 and fresh.present[0, 0] and not fresh.stale.any()
    time.sleep(max(0.0, born.timestamp() + ttl.total_seconds() - time.time()) + 0.3)
    old = reader.read(entities)
    assert np.isnan(old.values[0, 0]) and old.stale[0, 0] and not old.present[0, 0]
    assert old.age[0, 0] > ttl.total_seconds() and not old.missing[0, 0]
    assert old.present[0, 1] and not old.stale[0, 1]  # card_history is within its TTL
    sdk = feast_repo.store.get_online_features(
        features=refs, entity_rows=[{"card_id": card, "merchant_id": merchant}]
    )
    assert sdk.to_dict()["pair_count"] == [7]  # Feast's read path skips TTL
    assert reader.read_dict([{"card_id": card, "merchant_id": merchant}])["pair_count"] == [7]
    reader.close()


def test_error_reply_gives_status_and_the_next_read_works(
    feast_repo: Repo, redis_url: str
) -> None:
    """A Redis error reply mid-batch (a key of the wrong type) is an ``error`` status with
    NaN, never a raise, and the reader stays in step for the next batch."""
    import redis

    from features import layout

    refs = ["card_history:avg_amount", "merchant_risk:fraud_rate"]
    reader = OnlineReader(feast_repo.path, refs, redis_url, timeout_ms=5000)
    bad = layout.redis_key(feast_repo.project, ["merchant_id"], [layout.KIND_STRING], ["bad"])
    client = redis.Redis.from_url(redis_url)
    client.set(bad, b"not a hash")
    try:
        cards = [int(c) for c in feast_repo.card_ids[:40]]
        good = feast_repo.merchant_ids[:40]
        res = reader.read({"card_id": cards, "merchant_id": [*good[:39], "bad"]})
        assert res.status == "error" and "WRONGTYPE" in (res.error or "")
        assert np.isnan(res.values).all() and not res.present.any()
        res = reader.read({"card_id": cards, "merchant_id": good})
        assert res.ok and res.present[:, 0].all()
    finally:
        client.delete(bad)
        client.close()
        reader.close()


@pytest.mark.parametrize("pipeline", ["fraud", "pricing"])
def test_shipped_repos_read_equals_sdk(
    pipeline: str, tmp_path: Any, redis_url: str, unique_name: str
) -> None:
    """The shipped fraud and pricing repos: every feature of every view, value for value."""
    from benchmarks.bench_features import _fill
    from features.materialize import apply_repo
    from features.repo import delete_project_keys, load_vocab, open_store, prepare_repo

    repo = prepare_repo(pipeline, tmp_path, project=unique_name, redis_url=redis_url)
    try:
        apply_repo(repo, redis_url)
        store = open_store(repo, redis_url)
        vocab = load_vocab(repo)
        rng = np.random.default_rng(3)
        keys: dict[str, list[Any]] = {}
        for i, view in enumerate(store.list_feature_views()):
            col = view.entity_columns[0]
            if col.name not in keys:
                if col.dtype.to_value_type().name == "STRING":
                    keys[col.name] = [f"k{j}" for j in rng.choice(10**6, 300, replace=False)]
                else:
                    keys[col.name] = [int(j) for j in rng.choice(10**9, 300, replace=False)]
            _fill(store, view, keys[col.name][: 250 - 40 * i], vocab, i)  # views overlap partly
        refs = [f"{v.name}:{f.name}" for v in store.list_feature_views() for f in v.features]
        rows = [{k: (v[int(rng.integers(0, 300))]) for k, v in keys.items()} for _ in range(700)]
        want = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        reader = OnlineReader(repo, refs, redis_url, timeout_ms=5000)
        assert reader.read_dict(rows) == want
        res = reader.read({k: [r[k] for r in rows] for k in keys})
        assert res.ok
        for col_i, ref in enumerate(refs):
            feature = ref.split(":")[1]
            expected = [_as_float(vocab, feature, v) for v in want[feature]]
            np.testing.assert_array_equal(res.values[:, col_i], expected, err_msg=ref)
        assert res.present.any(axis=0).all() and (~res.present).any(axis=0).all()
        reader.close()
    finally:
        delete_project_keys(redis_url, unique_name)
