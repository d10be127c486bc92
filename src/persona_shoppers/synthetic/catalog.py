"""Synthetic shop catalogs: products, collections, collection membership, buyer queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..contract import CATEGORY_SEPARATOR
from .vocabulary import QUERY_MODIFIERS, VERTICALS, Vertical

QUERY_STYLES = ("terse", "descriptive", "brand", "deal", "gift", "quality")


@dataclass(frozen=True)
class ShopSpec:
    shop_id: str
    name: str
    verticals: tuple[str, ...]
    n_products: int
    price_level: float


@dataclass
class ShopCatalog:
    """One shop's catalog with the arrays the behaviour process needs, aligned by row."""

    spec: ShopSpec
    products: pd.DataFrame  # raw contract columns + type_index, brand_index, colour
    collections: pd.DataFrame
    collection_products: pd.DataFrame
    type_names: list[str]
    queries: np.ndarray  # (n_products, n_styles, n_variants) object array of query strings

    @property
    def n_products(self) -> int:
        return len(self.products)


def _vertical(name: str) -> Vertical:
    for vertical in VERTICALS:
        if vertical.name == name:
            return vertical
    raise ValueError(f"unknown vertical {name!r}; known: {[v.name for v in VERTICALS]}")


def shop_specs(n_shops: int, products_per_shop: int, rng: np.random.Generator) -> list[ShopSpec]:
    """Give each shop a main vertical (cycling through all), maybe a second one, a price level."""
    names = [v.name for v in VERTICALS]
    specs = []
    for i in range(n_shops):
        main = names[i % len(names)]
        verticals = (main,)
        if rng.random() < 0.4:
            verticals += (names[(i + 1 + rng.integers(len(names) - 1)) % len(names)],)
        specs.append(
            ShopSpec(
                shop_id=f"shop{i + 1:02d}",
                name=f"{main} store {i + 1}",
                verticals=verticals,
                n_products=products_per_shop,
                price_level=float(np.round(rng.lognormal(0.0, 0.25), 3)),
            )
        )
    return specs


def _round_price(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.floor(x) + 0.99, 1.99)


def build_catalog(
    spec: ShopSpec, rng: np.random.Generator, n_query_variants: int = 3
) -> ShopCatalog:
    """Compose a shop's products from its verticals: titles, categories, prices, ratings."""
    verticals = [_vertical(v) for v in spec.verticals]
    # The main vertical gets about 75% of the products when a shop has two.
    shares = np.array([3.0] + [1.0] * (len(verticals) - 1))
    vertical_of = rng.choice(len(verticals), size=spec.n_products, p=shares / shares.sum())
    type_keys: list[tuple[int, int]] = []
    brands_per_vertical = [
        [v.brands[j] for j in rng.choice(len(v.brands), size=min(6, len(v.brands)), replace=False)]
        for v in verticals
    ]
    brand_premium = {b: float(rng.lognormal(0.0, 0.3)) for bs in brands_per_vertical for b in bs}
    brand_quality = {b: float(rng.normal(0.0, 0.25)) for bs in brands_per_vertical for b in bs}
    rows = []
    for i in range(spec.n_products):
        vi = int(vertical_of[i])
        vertical = verticals[vi]
        ptype = vertical.types[rng.integers(len(vertical.types))]
        brand = brands_per_vertical[vi][rng.integers(len(brands_per_vertical[vi]))]
        attribute = ptype.attributes[rng.integers(len(ptype.attributes))]
        colour = vertical.colours[rng.integers(len(vertical.colours))]
        key = (vi, vertical.types.index(ptype))
        if key not in type_keys:
            type_keys.append(key)
        price = ptype.base_price * spec.price_level * brand_premium[brand] * rng.lognormal(0.0, 0.3)
        rating = float(np.clip(rng.normal(4.2 + brand_quality[brand], 0.35), 1.0, 5.0))
        rows.append(
            {
                "shop_id": spec.shop_id,
                "product_id": f"{spec.shop_id}-p{i + 1:04d}",
                "title": f"{brand} {attribute} {colour} {ptype.name}",
                "category": f"{vertical.name}{CATEGORY_SEPARATOR}{ptype.name}",
                "brand": brand,
                "price": price,
                "description": f"{attribute} {ptype.name.lower()} in {colour.lower()} by {brand}. "
                + vertical.blurb,
                "rating": round(rating, 1),
                "review_count": int(rng.lognormal(3.0, 1.3)),
                "type_key": key,
                "attribute": attribute,
                "colour": colour,
            }
        )
    products = pd.DataFrame(rows)
    products["price"] = _round_price(products["price"].to_numpy())
    type_keys.sort()
    products["type_index"] = products["type_key"].map({k: j for j, k in enumerate(type_keys)})
    brands = sorted(products["brand"].unique())
    products["brand_index"] = products["brand"].map({b: j for j, b in enumerate(brands)})
    type_names = [verticals[vi].types[ti].name for vi, ti in type_keys]
    queries = _query_variants(products, verticals, type_keys, rng, n_query_variants)
    collections, members = _collections(spec, products, type_names, rng)
    return ShopCatalog(
        spec=spec,
        products=products.drop(columns=["type_key"]),
        collections=collections,
        collection_products=members,
        type_names=type_names,
        queries=queries,
    )


def _query_variants(
    products: pd.DataFrame,
    verticals: list[Vertical],
    type_keys: list[tuple[int, int]],
    rng: np.random.Generator,
    n_variants: int,
) -> np.ndarray:
    """What a buyer looking for each product types, per query style, a few variants each.

    Queries are derived from the product: catalog words are dropped, swapped for synonyms, and
    attribute, brand or modifier words are added according to the style.
    """
    out = np.empty((len(products), len(QUERY_STYLES), n_variants), dtype=object)
    for i, row in enumerate(products.itertuples(index=False)):
        vi, ti = row.type_key
        ptype = verticals[vi].types[ti]
        for s, style in enumerate(QUERY_STYLES):
            for v in range(n_variants):
                noun = ptype.name.lower()
                if rng.random() < 0.35:
                    noun = ptype.synonyms[rng.integers(len(ptype.synonyms))]
                words = [noun]
                if style == "descriptive":
                    words = [row.colour.lower(), row.attribute.lower(), noun]
                    if rng.random() < 0.4:
                        words.pop(rng.integers(2))  # drop the colour or the attribute
                elif style == "brand":
                    words = [row.brand.lower(), noun] if rng.random() < 0.8 else [row.brand.lower()]
                elif style in QUERY_MODIFIERS:
                    modifiers = QUERY_MODIFIERS[style]
                    words = [modifiers[rng.integers(len(modifiers))], noun]
                elif rng.random() < 0.25:  # terse, sometimes with the attribute
                    words = [row.attribute.lower(), noun]
                out[i, s, v] = " ".join(words)
    return out


def _collections(
    spec: ShopSpec, products: pd.DataFrame, type_names: list[str], rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One collection per product type, plus New Arrivals, Best Sellers, Sale and top brands."""
    members: list[tuple[str, np.ndarray]] = [
        (name, np.flatnonzero(products["type_index"].to_numpy() == j))
        for j, name in enumerate(type_names)
    ]
    n = len(products)
    k = max(1, n // 7)
    members.append(("New Arrivals", np.sort(rng.choice(n, size=k, replace=False))))
    members.append(
        (
            "Best Sellers",
            np.sort(np.argsort(-products["review_count"].to_numpy(), kind="stable")[:k]),
        )
    )
    members.append(("Sale", np.sort(rng.choice(n, size=k, replace=False))))
    for brand in products["brand"].value_counts().index[:3]:
        members.append(
            (f"{brand} Collection", np.flatnonzero(products["brand"].to_numpy() == brand))
        )
    collections = pd.DataFrame(
        {
            "shop_id": spec.shop_id,
            "collection_id": [f"{spec.shop_id}-c{j + 1:02d}" for j in range(len(members))],
            "title": [title for title, _ in members],
        }
    )
    rows = [
        (spec.shop_id, f"{spec.shop_id}-c{j + 1:02d}", pid)
        for j, (_, idx) in enumerate(members)
        for pid in products["product_id"].to_numpy()[idx]
    ]
    return collections, pd.DataFrame(rows, columns=["shop_id", "collection_id", "product_id"])
