"""Table 5 transforms: robust z, Laplace-smoothed logit rates, fitting on training rows only,
the 403-d layout and one-pass featurisation of a new buyer."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pandas as pd
import polars as pl
import pytest

from persona_shoppers.clickstream.buyers import BEHAVIOURAL_FEATURES
from persona_shoppers.features import transform
from persona_shoppers.features.embeddings import buyer_channel_means
from persona_shoppers.features.layout import FeatureLayout
from persona_shoppers.features.transform import BuyerFeatureTransformer, logit, robust_scale
from persona_shoppers.pipelines.feature_engineering.nodes import fit_feature_transformer

PARAMS = {"embedding_pca_dim": 3, "laplace_alpha": 1.0, "laplace_beta": 1.0}
PARAMS |= {"logit_eps": 1e-4, "seed": 0}
EMB_DIM = 6


# ----------------------------------------------------------------------------- robust_scale, logit


def test_robust_scale_is_median_and_iqr():
    # sorted 1 2 3 4 100: median 3, quartiles 2 and 4 (linear interpolation), IQR 2.
    assert robust_scale(np.array([100.0, 1.0, 4.0, 2.0, 3.0])) == (3.0, 2.0)


def test_robust_scale_falls_back_to_mad_when_iqr_is_zero(monkeypatch):
    # With numpy's default linear quartiles an IQR of 0 means more than half the values sit on
    # the median, so the MAD is 0 too; nearest-rank quartiles reach the MAD branch:
    # 0 1 1 3 -> quartiles 1 and 1, median 1, |x - 1| = 1 0 0 2 -> MAD 0.5 -> 0.5 x 1.4826.
    nearest = functools.partial(np.percentile, method="nearest")
    monkeypatch.setattr(transform.np, "percentile", nearest)
    centre, scale = robust_scale(np.array([0.0, 1.0, 1.0, 3.0]))
    assert centre == 1.0
    assert scale == pytest.approx(0.7413)


def test_robust_scale_is_one_when_iqr_and_mad_are_zero():
    assert robust_scale(np.zeros(5)) == (0.0, 1.0)
    # -3 5 5 5 5 5 9: quartiles 5 and 5, MAD 0 -> scale 1.
    assert robust_scale(np.array([5.0, 9.0, 5.0, -3.0, 5.0, 5.0, 5.0])) == (5.0, 1.0)


def test_logit_clips_at_eps():
    out = logit(np.array([0.0, 0.5, 1.0, 0.75]), eps=0.01)
    np.testing.assert_allclose(out, [np.log(1 / 99), 0.0, np.log(99), np.log(3)])
    assert logit(np.array([0.0]))[0] == pytest.approx(np.log(1e-4 / (1 - 1e-4)))


# ----------------------------------------------------------------------------- raw scalars

TWO_BUYERS = pd.DataFrame(
    {
        "shop_id": ["s1", "s1"],
        "buyer_id": ["b1", "b2"],
        "n_sessions": [4, 2],
        "active_days": [2, 1],
        "product_view_sessions": [3, 1],
        "atc_sessions": [1, 0],
        "checkout_sessions": [1, 0],
        "purchase_sessions": [0, 0],
        "search_sessions": [2, 0],
        "collection_sessions": [0, 1],
        "total_duration_s": [600.0, 0.0],
        "total_product_views": [7, 2],
        "atc_rate": [0.25, 0.0],
        "checkout_rate": [0.25, 0.0],
        "browse_only_rate": [0.75, 1.0],
        "intent_strength": [8 / 12, 0.0],
        "avg_cart_value": [49.0, 0.0],
        "avg_order_value": [0.0, 0.0],
        "stratum": ["B", "D"],
        "browse_only_sessions": [3, 2],
    }
)
# Written out by hand: log1p of counts; rates (n + 1) / (N + 2) -> logit; logit of intent.
EXPECTED_RAW = np.array(
    [
        [
            np.log(5),  # n_sessions 4
            np.log(3),  # active_days 2
            np.log(4),  # product_view_sessions 3
            np.log(2),  # atc_sessions 1
            np.log(2),  # checkout_sessions 1
            0.0,  # purchase_sessions 0
            np.log(3),  # search_sessions 2
            0.0,  # collection_sessions 0
            np.log(601),  # total_duration_s 600
            np.log(8),  # total_product_views 7
            -np.log(2),  # atc (1 + 1) / (4 + 2) = 1/3 -> log(1/2)
            -np.log(2),  # checkout 1/3
            np.log(2),  # browse-only (3 + 1) / 6 = 2/3 -> log 2
            np.log(2),  # intent 2/3 -> log 2
            np.log(50),  # avg_cart_value 49
            0.0,  # avg_order_value 0
        ],
        [
            np.log(3),
            np.log(2),
            np.log(2),
            0.0,
            0.0,
            0.0,
            0.0,
            np.log(2),
            0.0,
            np.log(3),
            -np.log(3),  # atc (0 + 1) / (2 + 2) = 1/4 -> log(1/3)
            -np.log(3),
            np.log(3),  # browse-only (2 + 1) / 4 = 3/4 -> log 3
            np.log(1e-4 / (1 - 1e-4)),  # intent 0 clipped at eps
            0.0,
            0.0,
        ],
    ]
)


def test_raw_scalars_by_hand():
    raw = BuyerFeatureTransformer().raw_scalars(TWO_BUYERS)
    assert raw.shape == (2, 16)
    np.testing.assert_allclose(raw, EXPECTED_RAW, rtol=1e-12, atol=1e-12)


def test_browse_only_count_falls_back_to_rate_times_sessions():
    raw = BuyerFeatureTransformer().raw_scalars(TWO_BUYERS.drop(columns="browse_only_sessions"))
    np.testing.assert_allclose(raw, EXPECTED_RAW, rtol=1e-12, atol=1e-12)


def test_laplace_prior_is_a_parameter():
    raw = BuyerFeatureTransformer(laplace_alpha=2.0, laplace_beta=0.0).raw_scalars(TWO_BUYERS)
    atc = BEHAVIOURAL_FEATURES.index("atc_rate")
    # (1 + 2) / (4 + 2) = 1/2 -> 0; (0 + 2) / (2 + 2) = 1/2 -> 0.
    np.testing.assert_allclose(raw[:, atc], [0.0, 0.0], atol=1e-12)


def test_raw_scalars_names_missing_columns():
    with pytest.raises(ValueError, match="avg_order_value"):
        BuyerFeatureTransformer().raw_scalars(TWO_BUYERS.drop(columns="avg_order_value"))


# ----------------------------------------------------------------------------- a small world


def _world(seed: int = 0, per_shop: int = 40):
    """Buyers with consistent raw features, their sessions and 6-d product embeddings."""
    rng = np.random.default_rng(seed)
    rows, sessions, products = [], [], []
    for shop in ("s1", "s2"):
        ids = [f"p{j:02d}" for j in range(12)]
        for pid in ids:
            products.append((shop, pid, rng.normal(size=EMB_DIM).astype(np.float32)))
        for b in range(per_shop):
            n = int(rng.integers(1, 8))
            atc = int(rng.integers(0, n + 1))
            co = int(rng.integers(0, atc + 1))
            pur = int(rng.integers(0, co + 1))
            pv = int(rng.integers(1, n + 1))
            committed = 3 * atc + 5 * co + 8 * pur
            row = {
                "shop_id": shop,
                "buyer_id": f"b{b:03d}",
                "n_sessions": n,
                "active_days": int(rng.integers(1, n + 1)),
                "product_view_sessions": pv,
                "atc_sessions": atc,
                "checkout_sessions": co,
                "purchase_sessions": pur,
                "search_sessions": int(rng.integers(0, n + 1)),
                "collection_sessions": int(rng.integers(0, n + 1)),
                "total_duration_s": float(rng.exponential(300) * n),
                "total_product_views": pv + int(rng.integers(0, 10)),
                "atc_rate": atc / n,
                "checkout_rate": co / n,
                "browse_only_rate": (n - atc) / n,
                "intent_strength": committed / (n + committed),
                "avg_cart_value": float(rng.gamma(2.0, 30.0)) if atc else 0.0,
                "avg_order_value": float(rng.gamma(2.0, 40.0)) if pur else 0.0,
                "stratum": "A" if pur else "B" if co else "C" if atc else "D",
                "browse_only_sessions": n - atc,
            }
            rows.append(row)
            viewed = rng.choice(ids, size=int(rng.integers(1, 5))).tolist()
            carted = viewed[:1] if atc else []
            purchased = viewed[:1] if pur else []
            sessions.append((shop, row["buyer_id"], 1, viewed, carted, purchased))
    buyers = pd.DataFrame(rows)
    session_frame = pl.DataFrame(
        sessions,
        schema={
            "shop_id": pl.String,
            "buyer_id": pl.String,
            "session_id": pl.Int64,
            "viewed_product_ids": pl.List(pl.String),
            "carted_product_ids": pl.List(pl.String),
            "purchased_product_ids": pl.List(pl.String),
        },
        orient="row",
    )
    product_embeddings = pd.DataFrame(products, columns=["shop_id", "product_id", "embedding"])
    return buyers, session_frame, product_embeddings


def _fit(buyers, sessions, product_embeddings, **kwargs):
    transformer = BuyerFeatureTransformer(embedding_dim=3, **kwargs)
    return transformer.fit(buyers, buyer_channel_means(sessions, buyers, product_embeddings))


def _state(t: BuyerFeatureTransformer) -> dict:
    """Every fitted statistic as plain arrays, for equality checks."""
    out = {"centre": t.scalar_centre, "scale": t.scalar_scale}
    for channel in t.pca:
        out[f"{channel}_mean"] = t.channel_mean[channel]
        out[f"{channel}_std"] = t.channel_std[channel]
        out[f"{channel}_pca_mean"] = t.pca[channel].mean_
        out[f"{channel}_pca_components"] = t.pca[channel].components_
    for head, edges in t.aux_edges.items():
        out[f"edges_{head}"] = np.asarray(edges)
    return out


def _assert_same_state(a: BuyerFeatureTransformer, b: BuyerFeatureTransformer):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_allclose(sa[key], sb[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.fixture(scope="module")
def fitted(world):
    return _fit(*world)


# ----------------------------------------------------------------------------- layout


def test_default_layout_is_403_wide():
    layout = FeatureLayout()
    assert layout.dim == 403 == BuyerFeatureTransformer().layout.dim
    assert layout.scalars == slice(0, 16)
    assert [layout.channel(i) for i in range(3)] == [
        slice(16, 144),
        slice(144, 272),
        slice(272, 400),
    ]
    assert layout.masks == slice(400, 403)
    names = layout.column_names(list(BEHAVIOURAL_FEATURES))
    assert len(names) == 403
    assert names[0] == "x_n_sessions" and names[15] == "x_avg_order_value"
    assert names[16] == "viewed_emb_000" and names[399] == "purchased_emb_127"
    assert names[400:] == ["has_viewed", "has_carted", "has_purchased"]
    with pytest.raises(ValueError, match="16 scalar names"):
        layout.column_names(["a"])


def test_absent_channel_is_a_zero_block_with_mask_zero(world, fitted):
    buyers, sessions, products = world
    no_cart = buyers[buyers["atc_sessions"] == 0].iloc[[0]]
    with_all = buyers[buyers["purchase_sessions"] > 0].iloc[[0]]
    frame = pd.concat([no_cart, with_all], ignore_index=True)
    out = fitted.transform(frame, buyer_channel_means(sessions, frame, products))
    layout = fitted.layout
    assert out.shape == (2, 16 + 3 * 3 + 3) and out.dtype == np.float32
    assert out[0, layout.masks].tolist() == [1.0, 0.0, 0.0]
    assert not out[0, layout.channel(1)].any() and not out[0, layout.channel(2)].any()
    assert out[0, layout.channel(0)].any()
    assert out[1, layout.masks].tolist() == [1.0, 1.0, 1.0]
    assert all(out[1, layout.channel(i)].any() for i in range(3))


def test_transform_before_fit_raises(world):
    buyers, sessions, products = world
    channels = buyer_channel_means(sessions, buyers, products)
    with pytest.raises(RuntimeError, match="before fit"):
        BuyerFeatureTransformer().transform(buyers, channels)
    with pytest.raises(RuntimeError, match="before fit"):
        BuyerFeatureTransformer().labels(buyers)


def test_a_small_log_fits_the_dimension_its_smallest_channel_allows(world, caplog):
    """Fewer training buyers in a channel than embedding_pca_dim: every channel uses one less
    than that count, with a warning naming the channel; a channel with one buyer stops."""
    buyers, sessions, products = world
    channels = buyer_channel_means(sessions, buyers, products)
    counts = {c: int(channels[c][1].sum()) for c in channels}
    smallest = min(counts, key=counts.get)
    wide = {c: (np.tile(means, (1, 20)), present) for c, (means, present) in channels.items()}
    with caplog.at_level("WARNING"):
        fitted = BuyerFeatureTransformer().fit(buyers, wide)
    assert fitted.embedding_dim == counts[smallest] - 1 < 128
    assert f"channel '{smallest}' ({counts[smallest]} training buyers" in caplog.text
    out = fitted.transform(buyers, wide)
    assert out.shape == (len(buyers), 16 + 3 * fitted.embedding_dim + 3)
    means, present = wide[smallest]
    lonely = present & (np.cumsum(present) <= 1)
    with pytest.raises(ValueError, match=f"channel '{smallest}' has 1 training buyers"):
        BuyerFeatureTransformer().fit(buyers, {**wide, smallest: (means, lonely)})


def test_scalars_are_robust_z_of_the_raw_values(world, fitted):
    buyers, sessions, products = world
    out = fitted.transform(buyers, buyer_channel_means(sessions, buyers, products))
    raw = fitted.raw_scalars(buyers)
    j = BEHAVIOURAL_FEATURES.index("n_sessions")
    centre = np.median(raw[:, j])
    q25, q75 = np.percentile(raw[:, j], [25, 75])
    np.testing.assert_allclose(out[:, j], (raw[:, j] - centre) / (q75 - q25), rtol=1e-5)
    # Robust z of training rows: median 0 per scalar column.
    np.testing.assert_allclose(np.median(out[:, :16], axis=0), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- train-only fitting


def _with_extreme_holdout(world):
    """The world plus held-out buyers carrying extreme features and an outlier product."""
    buyers, sessions, products = world
    held = buyers.iloc[:12].copy()
    held["buyer_id"] = [f"h{i:03d}" for i in range(len(held))]
    held["shop_id"] = ["s3"] * 6 + ["s1"] * 6
    for column in ("n_sessions", "total_duration_s", "total_product_views", "avg_order_value"):
        held[column] = 1e9
    held["purchase_sessions"] = 10**6
    held["atc_sessions"] = 10**6
    held["intent_strength"] = 0.999999
    outlier = pd.DataFrame(
        {
            "shop_id": ["s1", "s3"],
            "product_id": ["p_out", "p_out"],
            "embedding": [np.full(EMB_DIM, 1e3, dtype=np.float32)] * 2,
        }
    )
    held_sessions = pl.DataFrame(
        {
            "shop_id": held["shop_id"].tolist(),
            "buyer_id": held["buyer_id"].tolist(),
            "session_id": [1] * len(held),
            "viewed_product_ids": [["p_out"] * 3] * len(held),
            "carted_product_ids": [["p_out"]] * len(held),
            "purchased_product_ids": [["p_out"]] * len(held),
        },
        schema=sessions.schema,
    )
    return (
        pd.concat([buyers, held], ignore_index=True),
        pl.concat([sessions, held_sessions]),
        pd.concat([products, outlier], ignore_index=True),
        held,
    )


def test_fit_uses_only_the_rows_it_is_given(world, fitted):
    all_buyers, all_sessions, all_products, held = _with_extreme_holdout(world)
    # The same training buyers, with the outlier product in the table and held-out sessions
    # present, fit exactly the same statistics.
    train = all_buyers[~all_buyers["buyer_id"].isin(held["buyer_id"])]
    again = _fit(train, all_sessions, all_products)
    _assert_same_state(again, fitted)
    # ... whereas fitting with the held-out buyers would move them (the plant is effective).
    polluted = _fit(all_buyers, all_sessions, all_products)
    assert not np.allclose(polluted.scalar_centre, fitted.scalar_centre)
    assert not np.allclose(polluted.channel_mean["viewed"], fitted.channel_mean["viewed"])


def test_fit_feature_transformer_node_uses_only_train_split(world):
    all_buyers, all_sessions, all_products, held = _with_extreme_holdout(world)
    rng = np.random.default_rng(1)
    split = np.where(rng.random(len(all_buyers)) < 0.75, "train", "val")
    # The held-out buyers (the last 12 rows) are val, unsampled and eval rows.
    split[-12:] = ["val", "unsampled"] * 3 + ["eval"] * 6
    splits = all_buyers[["shop_id", "buyer_id", "stratum"]].assign(split=split)
    # Shuffled rows: the node sorts its training rows itself.
    shuffled = all_buyers.sample(frac=1.0, random_state=3)
    node_fit = fit_feature_transformer(shuffled, splits, all_sessions, all_products, **PARAMS)

    train = all_buyers[split == "train"].sort_values(["shop_id", "buyer_id"]).reset_index(drop=True)
    direct = _fit(train, all_sessions, all_products)
    _assert_same_state(node_fit, direct)
    # Identical to running the node without any non-training buyer at all.
    only_train = fit_feature_transformer(
        all_buyers[split == "train"],
        splits[split == "train"],
        all_sessions,
        all_products,
        **PARAMS,
    )
    _assert_same_state(node_fit, only_train)
    assert node_fit.embedding_dim == 3 and node_fit.logit_eps == 1e-4


# ----------------------------------------------------------------------------- one pass


def test_one_pass_featurisation_equals_the_batch(world, fitted):
    all_buyers, all_sessions, all_products, held = _with_extreme_holdout(world)
    batch = fitted.transform(
        all_buyers, buyer_channel_means(all_sessions, all_buyers, all_products)
    )
    restored = pickle.loads(pickle.dumps(fitted))  # as persisted by the catalog
    # Training buyers, held-out buyers and one never seen at fit time.
    for i in [0, 5, 41, len(all_buyers) - 1]:
        one = all_buyers.iloc[[i]]
        vector = restored.transform(one, buyer_channel_means(all_sessions, one, all_products))
        assert vector.shape == (1, fitted.layout.dim)
        np.testing.assert_allclose(vector[0], batch[i], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(restored.labels(one)[0], fitted.labels(all_buyers)[i])
