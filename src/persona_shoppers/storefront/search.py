"""BM25 search over one shop's catalog, ranked under a store variant."""

from __future__ import annotations

import bm25s
import numpy as np
import pandas as pd

from .variants import StoreVariant


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class ProductSearch:
    """Search one shop's products by title, category and brand (bm25s, Lucene BM25).

    Positions returned are row positions in the ``products`` frame given at construction.
    """

    def __init__(self, products: pd.DataFrame):
        if products.empty:
            raise ValueError("ProductSearch needs at least one product")
        self.products = products.reset_index(drop=True)
        text = (
            self.products["title"].fillna("")
            + " "
            + self.products["category"].fillna("").str.replace(">", " ", regex=False)
            + " "
            + self.products["brand"].fillna("")
        )
        self._index = bm25s.BM25()
        self._index.index(_tokenize(text.tolist()), show_progress=False)
        self._price = self.products["price"].to_numpy(dtype=float)
        self._rating = self.products["rating"].fillna(0).to_numpy(dtype=float)
        self._reviews = self.products["review_count"].fillna(0).to_numpy(dtype=float)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every product for ``query`` (0 where no query word matches)."""
        tokens = _tokenize([query])[0]
        if not tokens:
            return np.zeros(len(self.products), dtype=np.float32)
        return self._index.get_scores(tokens)

    def rank(
        self, candidates: np.ndarray, variant: StoreVariant, relevance: np.ndarray | None = None
    ) -> np.ndarray:
        """Order product positions ``candidates`` as the variant ranks them (deterministic)."""
        keys_by_ranking = {
            "relevance": (-relevance[candidates],) if relevance is not None else (),
            "popularity": (),
            "price_low_to_high": (self._price[candidates],),
            "rating": (-self._rating[candidates],),
        }
        # np.lexsort sorts by the last key first: the primary key goes last, ties broken by
        # review count, then catalog position.
        keys = (candidates, -self._reviews[candidates], *keys_by_ranking[variant.ranking][::-1])
        return candidates[np.lexsort(keys)]

    def search(self, query: str, variant: StoreVariant, limit: int | None = None) -> np.ndarray:
        """Positions of the products matching ``query``, best first, at most ``limit``."""
        relevance = self.scores(query)
        ranked = self.rank(np.flatnonzero(relevance > 0), variant, relevance)
        return ranked if limit is None else ranked[:limit]
