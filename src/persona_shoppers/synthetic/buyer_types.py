"""The planted buyer types: explicit behavioural parameters each generated buyer follows.

Every later stage is checked against these: the VQ-VAE should separate them, persona cards
should describe them, and simulated agents should shop like them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class BuyerType:
    """Parameters of one planted buyer type.

    Frequency: ``sessions_per_year`` (mean; each buyer has 1 + Poisson(mean - 1) sessions).
    Engagement: ``bounce_prob`` (a session ends on the landing page), ``episodes_mean`` (browsing
    episodes per non-bounced session), ``views_per_episode`` (mean product views per episode),
    ``dwell_s`` (mean seconds on a product page).
    Exploration: ``p_search``, ``p_collection``, ``p_direct`` (how an episode starts).
    Funnel: ``cart_prob`` (add a viewed product that matches the intent), ``remove_prob``,
    ``checkout_prob`` (start checkout with a non-empty cart), ``purchase_prob`` (finish it).
    Preferences: ``price_sensitivity`` (elasticity of cart and purchase to price; negative =
    prefers expensive), ``brand_loyalty`` (pull of the buyer's favourite brand), ``rating_weight``,
    ``n_interests`` (product types the buyer cares about), ``query_style`` (terse, descriptive,
    brand, deal, gift, quality).
    """

    name: str
    description: str
    sessions_per_year: float
    bounce_prob: float
    episodes_mean: float
    views_per_episode: float
    dwell_s: float
    p_search: float
    p_collection: float
    p_direct: float
    cart_prob: float
    remove_prob: float
    checkout_prob: float
    purchase_prob: float
    price_sensitivity: float
    brand_loyalty: float
    rating_weight: float
    n_interests: int
    query_style: str
    prior_weight: float

    def __post_init__(self) -> None:
        total = self.p_search + self.p_collection + self.p_direct
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"buyer type {self.name}: p_search + p_collection + p_direct = {total}, not 1"
            )
        for name in ("bounce_prob", "cart_prob", "remove_prob", "checkout_prob", "purchase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"buyer type {self.name}: {name} must be a probability")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BuyerType:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown buyer type parameters: {sorted(unknown)}")
        return cls(**values)


def _bt(*args: Any) -> BuyerType:
    return BuyerType(*args)


# name, description, sessions/yr, bounce, episodes, views/ep, dwell, search, collection, direct,
# cart, remove, checkout, purchase, price_sens, brand_loyalty, rating_w, interests, query, prior
DEFAULT_BUYER_TYPES: tuple[BuyerType, ...] = (
    _bt(
        "loyal_regular",
        "Frequent, brand-loyal repeat purchaser",
        10,
        0.10,
        1.6,
        1.6,
        45,
        0.35,
        0.15,
        0.50,
        0.40,
        0.05,
        0.80,
        0.90,
        0.3,
        2.5,
        0.3,
        2,
        "brand",
        0.06,
    ),
    _bt(
        "deal_hunter",
        "Compares many cheap options, buys on price",
        6,
        0.10,
        2.8,
        3.0,
        35,
        0.65,
        0.30,
        0.05,
        0.22,
        0.20,
        0.55,
        0.75,
        2.6,
        0.0,
        0.4,
        3,
        "deal",
        0.08,
    ),
    _bt(
        "impulse_buyer",
        "Short sessions, quick carts, direct landings",
        4,
        0.15,
        1.1,
        1.2,
        20,
        0.15,
        0.25,
        0.60,
        0.50,
        0.10,
        0.70,
        0.85,
        0.4,
        0.5,
        0.2,
        2,
        "terse",
        0.05,
    ),
    _bt(
        "researcher",
        "Long, search-heavy sessions with detailed queries; rarely buys",
        6,
        0.05,
        3.2,
        3.5,
        110,
        0.80,
        0.15,
        0.05,
        0.03,
        0.30,
        0.50,
        0.70,
        0.8,
        0.3,
        1.5,
        2,
        "descriptive",
        0.09,
    ),
    _bt(
        "window_shopper",
        "Browses collections for inspiration, never carts",
        4,
        0.15,
        2.0,
        2.6,
        60,
        0.15,
        0.75,
        0.10,
        0.0,
        0.0,
        0.0,
        0.0,
        0.6,
        0.2,
        0.5,
        4,
        "terse",
        0.20,
    ),
    _bt(
        "cart_abandoner",
        "Fills carts, rarely starts checkout",
        4,
        0.10,
        1.8,
        2.2,
        40,
        0.45,
        0.35,
        0.20,
        0.35,
        0.25,
        0.03,
        0.30,
        1.2,
        0.3,
        0.4,
        3,
        "terse",
        0.10,
    ),
    _bt(
        "checkout_abandoner",
        "Reaches checkout and drops at payment",
        3,
        0.08,
        1.5,
        1.8,
        40,
        0.50,
        0.20,
        0.30,
        0.40,
        0.10,
        0.65,
        0.04,
        1.5,
        0.3,
        0.4,
        2,
        "descriptive",
        0.07,
    ),
    _bt(
        "bouncer",
        "Lands and leaves; seldom views a product",
        1.5,
        0.92,
        1.0,
        1.0,
        15,
        0.40,
        0.30,
        0.30,
        0.0,
        0.0,
        0.0,
        0.0,
        0.8,
        0.0,
        0.1,
        1,
        "terse",
        0.14,
    ),
    _bt(
        "brand_loyalist",
        "Searches by brand name and sticks to it",
        5,
        0.08,
        1.4,
        1.8,
        40,
        0.75,
        0.10,
        0.15,
        0.30,
        0.05,
        0.70,
        0.85,
        0.2,
        4.0,
        0.3,
        2,
        "brand",
        0.06,
    ),
    _bt(
        "gift_shopper",
        "Rare visits, broad interests, best-seller lists, buys once",
        1.5,
        0.10,
        2.2,
        2.0,
        50,
        0.40,
        0.55,
        0.05,
        0.30,
        0.10,
        0.65,
        0.80,
        0.9,
        0.0,
        1.2,
        5,
        "gift",
        0.07,
    ),
    _bt(
        "mission_shopper",
        "One precise search, one view, one purchase",
        3,
        0.05,
        1.0,
        1.1,
        30,
        0.90,
        0.0,
        0.10,
        0.65,
        0.02,
        0.85,
        0.92,
        0.5,
        0.6,
        0.5,
        1,
        "descriptive",
        0.06,
    ),
    _bt(
        "luxury_seeker",
        "Prefers premium, well-rated products, insensitive to price",
        4,
        0.10,
        1.8,
        2.0,
        70,
        0.45,
        0.40,
        0.15,
        0.30,
        0.05,
        0.70,
        0.85,
        -1.2,
        1.0,
        2.0,
        2,
        "quality",
        0.07,
    ),
)
