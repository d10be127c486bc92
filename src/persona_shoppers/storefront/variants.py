"""Store variants: the knobs an A/B test turns. Control and treatment differ only here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

RANKINGS = ("relevance", "popularity", "price_low_to_high", "rating")


@dataclass(frozen=True)
class StoreVariant:
    """How a store ranks, prices and pages its listings.

    ranking: order of search results (BM25 matches) and collection pages:
        relevance (BM25 score; collections by review count), popularity (review count),
        price_low_to_high, rating.
    price_multiplier: every displayed and charged price is the catalog price times this.
    page_size: how many results a search or collection page shows.
    """

    name: str = "control"
    ranking: str = "relevance"
    price_multiplier: float = 1.0
    page_size: int = 12

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ValueError(
                f"StoreVariant.ranking must be one of {RANKINGS}, got {self.ranking!r}"
            )
        if self.price_multiplier <= 0:
            raise ValueError(
                f"StoreVariant.price_multiplier must be > 0, got {self.price_multiplier}"
            )
        if self.page_size < 1:
            raise ValueError(f"StoreVariant.page_size must be >= 1, got {self.page_size}")

    def with_changes(self, name: str, **changes: Any) -> StoreVariant:
        """A treatment: this variant with some knobs changed."""
        return replace(self, name=name, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
