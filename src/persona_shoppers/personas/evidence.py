"""What a buyer's events say about them, as numbers and as the evidence lines a persona
prompt shows (the model verbalises evidence instead of doing arithmetic), and the levels the
same evidence implies (the behaviour a mined persona is checked against).

Every figure is relative to the buyer's own shop: a price level is the within-category price
percentile of the products the buyer carted or bought (viewed, when nothing was carted), a
rank is the share of the shop's reference buyers below the buyer. See docs/persona_mining.md,
"Evidence".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import polars as pl
from polars.dataframe.group_by import GroupBy

from persona_shoppers.agent.population import category_leaf
from persona_shoppers.personas.text_personas import FREQUENCIES, LEVELS

_KEYS = ["shop_id", "buyer_id"]
TOP_CATEGORIES = 3

# Evidence columns ranked within the shop, and what a rank tercile is called in a prompt.
RANKED: dict[str, tuple[str, str, str]] = {
    "price_level": ("budget", "mid-range", "premium"),
    "top_brand_share": ("spread over many brands", "a few favourite brands", "one main brand"),
    "n_sessions": ("rare visitor", "occasional visitor", "frequent visitor"),
}
MIN_BRAND_VIEWS = 3  # fewer product views say nothing about brand focus
# The persona field each ranked column implies, and whether a high rank means a low level.
IMPLIED: dict[str, tuple[str, bool]] = {
    "price_sensitivity": ("price_level", True),
    "brand_reliance": ("top_brand_share", False),
    "shopping_frequency": ("n_sessions", False),
}


def _viewed_counts(views: pl.DataFrame, column: str) -> GroupBy:
    """Views per (buyer, ``column`` value), grouped by buyer, most viewed value first (ties by
    name)."""
    return (
        views.filter(pl.col(column).is_not_null())
        .group_by([*_KEYS, column])
        .len()
        .sort([*_KEYS, "len", column], descending=[False, False, True, False])
        .group_by(_KEYS, maintain_order=True)
    )


def buyer_evidence(events: pl.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Per (shop_id, buyer_id) of ``events``: sessions, views, searches, carts, checkouts,
    purchases, price_level (the mean within-category price percentile; price_basis
    ``carted`` or ``viewed``), top_brand and
    top_brand_share (of product views; null under :data:`MIN_BRAND_VIEWS` views), categories
    (every viewed category), top_categories (the most viewed) and top_category_views.

    ``events`` are enriched events (product_id, category, brand); ``products`` the catalog
    (shop_id, product_id, category, price)."""
    catalog = pl.from_pandas(
        products[["shop_id", "product_id", "category", "price"]].rename(
            columns={"category": "_category"}
        )
    ).with_columns(
        (
            pl.col("price").rank("average").over("shop_id", "_category")
            / pl.len().over("shop_id", "_category")
        ).alias("_pct")
    )
    frame = events.select(
        *_KEYS, "session_id", "event_type", "product_id", "category", "brand"
    ).join(
        catalog.select("shop_id", "product_id", "_pct"), on=["shop_id", "product_id"], how="left"
    )
    kind = pl.col("event_type")
    view = kind == "product_view"
    bought = kind.is_in(["add_to_cart", "purchase"])
    counts = frame.group_by(_KEYS).agg(
        pl.col("session_id").n_unique().alias("n_sessions"),
        view.sum().alias("n_views"),
        (kind == "search").sum().alias("n_searches"),
        (kind == "add_to_cart").sum().alias("n_carts"),
        (kind == "checkout_start").sum().alias("n_checkouts"),
        (kind == "purchase").sum().alias("n_purchases"),
        pl.col("_pct").filter(bought).mean().alias("_carted_pct"),
        pl.col("_pct").filter(view).mean().alias("_viewed_pct"),
    )
    brands = (
        _viewed_counts(frame.filter(view), "brand")
        .agg(
            pl.col("brand").first().alias("top_brand"),
            (pl.col("len").first() / pl.col("len").sum()).alias("top_brand_share"),
            pl.col("len").sum().alias("_brand_views"),
        )
        .filter(pl.col("_brand_views") >= MIN_BRAND_VIEWS)
        .drop("_brand_views")
    )
    categories = _viewed_counts(frame.filter(view), "category").agg(
        pl.col("category").sort().alias("categories"),
        pl.col("category").head(TOP_CATEGORIES).alias("top_categories"),
        pl.col("len").head(TOP_CATEGORIES).alias("top_category_views"),
    )
    out = (
        counts.join(brands, on=_KEYS, how="left")
        .join(categories, on=_KEYS, how="left")
        .with_columns(
            pl.coalesce("_carted_pct", "_viewed_pct").alias("price_level"),
            pl.when(pl.col("_carted_pct").is_not_null())
            .then(pl.lit("carted"))
            .when(pl.col("_viewed_pct").is_not_null())
            .then(pl.lit("viewed"))
            .alias("price_basis"),
        )
        .drop("_carted_pct", "_viewed_pct")
        .sort(_KEYS)
        .to_pandas()
    )
    for column in ("categories", "top_categories", "top_category_views"):
        out[column] = [list(c) if c is not None else [] for c in out[column]]
    return out


def shop_ranks(evidence: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``evidence`` with ``<column>_rank`` for each :data:`RANKED` column: the share of the
    same shop's ``reference`` buyers with a lower value (ties count half; NaN where the buyer
    has no value or the shop no reference). Price levels are ranked among buyers of the same
    ``price_basis`` (carted prices against carted prices)."""
    out = evidence.copy()
    for column in RANKED:
        within = ["shop_id", "price_basis"] if column == "price_level" else ["shop_id"]
        groups = {_key(k): group[column] for k, group in reference.groupby(within)}
        ranks = np.full(len(out), np.nan)
        for key, rows in out.groupby(within).indices.items():
            key = _key(key)
            values = np.sort(groups[key].dropna().to_numpy(dtype=float)) if key in groups else []
            if not len(values):
                continue
            own = out[column].to_numpy(dtype=float)[rows]
            below = np.searchsorted(values, own, side="left")
            equal = np.searchsorted(values, own, side="right") - below
            ranks[rows] = np.where(np.isnan(own), np.nan, (below + equal / 2) / len(values))
        out[f"{column}_rank"] = ranks
    return out


def _key(key: object) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def tercile(rank: float) -> int | None:
    """0, 1 or 2 for a rank in [0, 1] (None when unknown)."""
    if rank is None or not np.isfinite(rank):
        return None
    return min(int(rank * 3), 2)


def implied_levels(ranked: Mapping[str, float]) -> dict[str, str | None]:
    """The persona levels a buyer's shop ranks imply (:data:`IMPLIED`), e.g. a budget price
    level -> high price sensitivity; None where the evidence is missing."""
    out: dict[str, str | None] = {}
    for field, (column, reverse) in IMPLIED.items():
        third = tercile(ranked.get(f"{column}_rank"))
        names = FREQUENCIES if field == "shopping_frequency" else LEVELS
        out[field] = None if third is None else names[2 - third if reverse else third]
    return out


def option_gloss(field: str, option: str) -> str | None:
    """The evidence word an implied field's option stands for (price sensitivity ``high`` ->
    ``budget``), shown beside the option so the model can match it to the evidence lines."""
    if field not in IMPLIED:
        return None
    column, reverse = IMPLIED[field]
    names = FREQUENCIES if field == "shopping_frequency" else LEVELS
    third = names.index(option)
    return RANKED[column][2 - third if reverse else third]


def evidence_lines(row: Mapping) -> str:
    """The evidence block of a persona prompt, one short line per fact (see module doc)."""

    def word(column: str) -> str | None:
        third = tercile(row.get(f"{column}_rank"))
        return None if third is None else RANKED[column][third]

    def rank(column: str) -> int:
        return round(100 * row[f"{column}_rank"])

    purchases = int(row["n_purchases"])
    lines = [
        f"- visits: {word('n_sessions')} ({int(row['n_sessions'])} sessions)",
        f"- activity: {int(row['n_views'])} product views, {int(row['n_searches'])} searches, "
        f"{int(row['n_carts'])} added to cart, {purchases} "
        f"purchase{'' if purchases == 1 else 's'}",
    ]
    if word("price_level"):
        lines.append(
            f"- price level: {word('price_level')} ({row['price_basis']} products pricier than "
            f"{round(100 * row['price_level'])}% of their category; more so than "
            f"{rank('price_level')}% of this shop's shoppers)"
        )
    if word("top_brand_share"):
        lines.append(
            f"- brands: {word('top_brand_share')} ({row['top_brand']}, "
            f"{round(100 * row['top_brand_share'])}% of views)"
        )
    top = row.get("top_categories")
    if top is not None and len(top):
        views = row["top_category_views"]
        named = ", ".join(
            f"{category_leaf(c)} ({n} views)" for c, n in zip(top, views, strict=True)
        )
        lines.append(f"- top categories: {named}")
    return "\n".join(lines)
