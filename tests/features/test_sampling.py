"""Shop roles and the stratified training sample (SimPersona 3.1, appendix C)."""

from __future__ import annotations

import pandas as pd
import pytest

from persona_shoppers.features.sampling import assign_splits, even_per_shop, shop_roles

# shop s1 (train): A 10, B 3, C 8, D 12, E 5; s2 (train): A 250, D 10; s3 (eval): every stratum.
COUNTS = {
    "s1": {"A": 10, "B": 3, "C": 8, "D": 12, "E": 5},
    "s2": {"A": 250, "D": 10, "E": 4},
    "s3": {"A": 7, "B": 2, "C": 3, "D": 9, "E": 6},
}
ROLES = {"s1": "train", "s2": "train", "s3": "eval"}


def _buyers() -> pd.DataFrame:
    rows = [
        (shop, f"{shop}_{stratum}{i:03d}", stratum)
        for shop, strata in COUNTS.items()
        for stratum, n in strata.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["shop_id", "buyer_id", "stratum"])


def _splits(seed: int = 0, **kwargs) -> pd.DataFrame:
    options = {"per_shop": 12, "per_stratum": 5} | kwargs
    return assign_splits(_buyers(), ROLES, seed=seed, **options)


def test_every_buyer_keeps_one_row():
    splits = _splits()
    assert list(splits.columns) == ["shop_id", "buyer_id", "stratum", "shop_role", "split"]
    assert len(splits) == len(_buyers())
    assert splits["buyer_id"].tolist() == _buyers()["buyer_id"].tolist()
    assert set(splits["split"]) == {"train", "val", "unsampled", "eval"}


def test_caps_per_stratum_and_per_shop():
    splits = _splits()
    sampled = splits[splits["split"].isin(["train", "val"])]
    assert sampled.groupby(["shop_id", "stratum"]).size().max() <= 5
    # s1 has 5 + 3 + 5 + 5 = 18 candidates after the stratum cap, 12 after the shop cap;
    # s2 has 5 + 5 = 10.
    assert sampled.groupby("shop_id").size().to_dict() == {"s1": 12, "s2": 10}
    # s2 is under the shop cap, so each stratum gives min(count, 5).
    s2 = sampled[sampled["shop_id"] == "s2"]
    assert s2["stratum"].value_counts().to_dict() == {"A": 5, "D": 5}
    assert (sampled.loc[sampled["shop_id"] == "s1", "stratum"] == "B").sum() <= 3


def test_stratum_e_is_never_sampled():
    splits = _splits(per_shop=1000, per_stratum=1000)
    train_shop_e = splits[(splits["shop_role"] == "train") & (splits["stratum"] == "E")]
    assert len(train_shop_e) == 9 and (train_shop_e["split"] == "unsampled").all()
    # Without caps everyone else in training shops is sampled.
    others = splits[(splits["shop_role"] == "train") & (splits["stratum"] != "E")]
    assert others["split"].isin(["train", "val"]).all()


def test_eval_shops_are_untouched():
    splits = _splits()
    eval_rows = splits[splits["shop_id"] == "s3"]
    assert len(eval_rows) == 27
    assert (eval_rows["split"] == "eval").all() and (eval_rows["shop_role"] == "eval").all()
    assert (splits.loc[splits["shop_id"] != "s3", "shop_role"] == "train").all()
    assert "eval" not in set(splits.loc[splits["shop_id"] != "s3", "split"])


def test_validation_share_per_shop():
    splits = _splits()
    val = splits[splits["split"] == "val"].groupby("shop_id").size().to_dict()
    # round(0.15 x 12) = 2, round(0.15 x 10) = 2 (1.5 rounds to even).
    assert val == {"s1": 2, "s2": 2}
    big = _splits(per_shop=1500, per_stratum=300)
    counts = big[big["shop_id"] == "s2"]["split"].value_counts().to_dict()
    # s2: 250 + 10 = 260 sampled -> round(39.0) = 39 val, 221 train.
    assert counts == {"train": 221, "val": 39, "unsampled": 4}


def test_deterministic_by_seed():
    pd.testing.assert_frame_equal(_splits(seed=5), _splits(seed=5))
    assert not _splits(seed=5)["split"].equals(_splits(seed=6)["split"])


def test_shop_roles_from_a_list():
    roles = shop_roles(["s2", "s1", "s3"], ["s3"], n_eval=1, seed=0)
    assert roles == {"s1": "train", "s2": "train", "s3": "eval"}
    assert list(roles) == ["s1", "s2", "s3"]


def test_shop_roles_seeded_draw():
    shops = [f"s{i}" for i in range(10)]
    roles = shop_roles(shops, None, n_eval=4, seed=3)
    assert sum(r == "eval" for r in roles.values()) == 4
    assert roles == shop_roles(list(reversed(shops)), None, n_eval=4, seed=3)
    # Never every shop: at least one is left to train on.
    capped = shop_roles(["a", "b"], None, n_eval=5, seed=0)
    assert sorted(capped.values()) == ["eval", "train"]


def test_shop_roles_errors():
    with pytest.raises(ValueError, match=r"\['s9'\] are not in buyers.shop_id.*eval_shops: null"):
        shop_roles(["s1", "s2"], ["s9"], n_eval=1, seed=0)
    with pytest.raises(ValueError, match="every shop is an eval shop"):
        shop_roles(["s1", "s2"], ["s2", "s1"], n_eval=1, seed=0)
    with pytest.raises(ValueError, match=r"one shop \(\['s1'\]\).*at least 2 shops"):
        shop_roles(["s1"], None, n_eval=1, seed=0)


def test_even_per_shop_takes_the_same_number_per_shop_seeded():
    buyers = pd.DataFrame(
        {"shop_id": ["a"] * 5 + ["b"] * 5 + ["c"], "buyer_id": [f"u{i}" for i in range(11)]}
    )
    chosen = even_per_shop(buyers, 6, seed=3)
    assert chosen["shop_id"].value_counts().to_dict() == {"a": 2, "b": 2, "c": 1}
    assert chosen.equals(even_per_shop(buyers, 6, seed=3))
    assert chosen[["shop_id", "buyer_id"]].equals(
        chosen.sort_values(["shop_id", "buyer_id"])[["shop_id", "buyer_id"]]
    )
    assert len(even_per_shop(buyers, 100, seed=0)) == 11
