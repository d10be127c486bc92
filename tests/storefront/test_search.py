"""Catalog search and store variants."""

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.storefront import ProductSearch, StoreVariant

PRODUCTS = pd.DataFrame(
    {
        "product_id": ["p1", "p2", "p3", "p4"],
        "title": [
            "Northwind Trail Running Shoes",
            "Acme Cotton T-Shirt",
            "Velo Road Running Shoes",
            "Northwind Rain Jacket",
        ],
        "category": [
            "Footwear > Running Shoes",
            "Apparel > T-Shirt",
            "Footwear > Running Shoes",
            "Apparel > Rain Jacket",
        ],
        "brand": ["Northwind", "Acme", "Velo", "Northwind"],
        "price": [120.0, 20.0, 80.0, 150.0],
        "rating": [4.1, 4.8, 4.6, 3.9],
        "review_count": [10, 500, 40, 5],
    }
)


def test_relevance_ranks_bm25_matches_only():
    search = ProductSearch(PRODUCTS)
    hits = search.search("trail running shoes", StoreVariant())
    assert hits.tolist()[0] == 0  # the only product matching all three words
    assert set(hits.tolist()) == {0, 2}  # the shirt and the jacket do not match
    assert search.search("zzz", StoreVariant()).size == 0


def test_rankings_reorder_the_same_matches():
    search = ProductSearch(PRODUCTS)
    by_price = search.search("running shoes", StoreVariant(ranking="price_low_to_high"))
    assert by_price.tolist() == [2, 0]
    by_rating = search.search("northwind", StoreVariant(ranking="rating"))
    assert by_rating.tolist() == [0, 3]
    by_popularity = search.rank(np.arange(4), StoreVariant(ranking="popularity"))
    assert by_popularity.tolist() == [1, 2, 0, 3]


def test_limit_and_variant_validation():
    search = ProductSearch(PRODUCTS)
    assert len(search.search("running", StoreVariant(), limit=1)) == 1
    with pytest.raises(ValueError, match="ranking must be one of"):
        StoreVariant(ranking="random")
    with pytest.raises(ValueError, match="price_multiplier"):
        StoreVariant(price_multiplier=0)
    treatment = StoreVariant().with_changes("t", page_size=4)
    assert treatment.page_size == 4 and treatment.ranking == "relevance" and treatment.name == "t"
