"""Generate a multi-shop clickstream in the raw contract, with its planted truth, from a seeded
:class:`SyntheticConfig`.

See docs/synthetic_data.md.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from tqdm.auto import tqdm

from ..contract import EVENT_SCHEMA, conform
from ..storefront import ProductSearch, StoreVariant
from .buyer_types import DEFAULT_BUYER_TYPES, BuyerType
from .catalog import ShopCatalog, build_catalog, shop_specs
from .shopping import (
    EVENT_CODES,
    Population,
    SessionOutcome,
    StoreListings,
    draw_population,
    draw_script,
    event_offsets,
    play,
    session_starts,
)

logger = logging.getLogger(__name__)

_PRODUCT_COLUMNS = [
    "shop_id",
    "product_id",
    "title",
    "category",
    "brand",
    "price",
    "description",
    "rating",
    "review_count",
]
_PRICED_EVENTS = ("product_view", "add_to_cart", "remove_from_cart", "purchase")
_QUANTITY_EVENTS = ("add_to_cart", "remove_from_cart", "purchase")


@dataclass(frozen=True)
class SyntheticConfig:
    """All knobs of the generator (parameters_synthetic_data.yml mirrors these)."""

    seed: int = 20261122
    n_shops: int = 12
    n_eval_shops: int = 6
    products_per_shop: int = 240
    buyers_per_shop: int = 2000
    window_days: int = 365
    window_end: str = "2026-10-31T00:00:00+00:00"
    cross_shop_share: float = 0.05
    mixture_concentration: float = 6.0
    query_variants: int = 3
    buyer_types: tuple[BuyerType, ...] = DEFAULT_BUYER_TYPES
    control: StoreVariant = field(default_factory=StoreVariant)
    ab_tests: tuple[StoreVariant, ...] = ()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SyntheticConfig:
        """Build from the Kedro parameters dict (buyer types and variants as plain dicts)."""
        values = dict(params)
        types = values.pop("buyer_types", None)
        control = StoreVariant(**values.pop("control", {}))
        tests = values.pop("ab_tests", []) or []
        return cls(
            **values,
            buyer_types=tuple(BuyerType.from_dict(t) for t in types)
            if types
            else DEFAULT_BUYER_TYPES,
            control=control,
            ab_tests=tuple(control.with_changes(**t) for t in tests),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["buyer_types"] = [t.to_dict() for t in self.buyer_types]
        return out


@dataclass
class SyntheticData:
    events: pl.DataFrame
    products: pd.DataFrame
    collections: pd.DataFrame
    collection_products: pd.DataFrame
    planted_truth: dict[str, Any]


@dataclass
class _Shop:
    catalog: ShopCatalog
    role: str
    mixture: np.ndarray
    population: Population
    script: Any
    search: ProductSearch
    seeds: dict[str, np.random.SeedSequence]


def _shops(config: SyntheticConfig, progress: bool = False) -> list[_Shop]:
    """Catalogs, populations and session scripts of every shop (store independent)."""
    root = np.random.SeedSequence(config.seed)
    layout_rng = np.random.default_rng(root.spawn(1)[0])
    specs = shop_specs(config.n_shops, config.products_per_shop, layout_rng)
    eval_idx = set(
        layout_rng.choice(config.n_shops, size=config.n_eval_shops, replace=False).tolist()
    )
    prior = np.array([t.prior_weight for t in config.buyer_types])
    prior = prior / prior.sum()
    shops, previous_ids = [], None
    shop_seeds = root.spawn(config.n_shops + 1)[1:]
    for i, (spec, seq) in enumerate(
        tqdm(list(zip(specs, shop_seeds, strict=True)), desc="shops: buyers", disable=not progress)
    ):
        seeds = dict(zip(("catalog", "population", "script", "time"), seq.spawn(4), strict=True))
        catalog = build_catalog(
            spec, np.random.default_rng(seeds["catalog"]), config.query_variants
        )
        pop_rng = np.random.default_rng(seeds["population"])
        mixture = pop_rng.dirichlet(config.mixture_concentration * len(prior) * prior)
        buyer_ids = np.array(
            [f"u{i + 1:02d}{b:06d}" for b in range(config.buyers_per_shop)], dtype=object
        )
        if previous_ids is not None and config.cross_shop_share > 0:
            # Some buyers also shop in the previous shop: same buyer_id, behaviour drawn anew.
            n_shared = int(round(config.cross_shop_share * config.buyers_per_shop))
            shared = pop_rng.choice(
                len(previous_ids), size=min(n_shared, len(previous_ids)), replace=False
            )
            buyer_ids[: len(shared)] = previous_ids[np.sort(shared)]
        previous_ids = buyer_ids
        pop = draw_population(
            catalog, list(config.buyer_types), mixture, buyer_ids, config.window_days, pop_rng
        )
        script = draw_script(
            catalog, list(config.buyer_types), pop, np.random.default_rng(seeds["script"])
        )
        shops.append(
            _Shop(
                catalog,
                "eval" if i in eval_idx else "train",
                mixture,
                pop,
                script,
                ProductSearch(catalog.products),
                seeds,
            )
        )
    return shops


def _play(
    config: SyntheticConfig, shop: _Shop, variant: StoreVariant, with_events: bool
) -> SessionOutcome:
    listings = StoreListings(shop.catalog, variant, shop.search)
    return play(
        shop.catalog,
        list(config.buyer_types),
        shop.population,
        shop.script,
        variant,
        listings,
        with_events,
    )


def _events_frame(
    config: SyntheticConfig, shop: _Shop, shop_number: int, outcome: SessionOutcome
) -> pl.DataFrame:
    events = outcome.events
    types = list(config.buyer_types)
    session_type = shop.population.type_index[shop.script.session_buyer]
    time_rng = np.random.default_rng(shop.seeds["time"])
    offsets, duration = event_offsets(events, session_type, types, time_rng)
    starts = session_starts(
        shop.script.session_buyer, duration, config.window_days * 86400.0, time_rng
    )
    window_start = datetime.fromisoformat(config.window_end) - timedelta(days=config.window_days)
    start_us = int(window_start.timestamp() * 1_000_000)
    ts_us = start_us + np.round((starts[events["session"]] + offsets) * 1_000_000).astype(np.int64)

    def nullable(index: np.ndarray) -> pl.Series:
        return pl.Series(np.where(index >= 0, index, 0)).set(pl.Series(index < 0), None)

    catalog = shop.catalog
    names = pl.Series(list(EVENT_CODES))
    event_type = names.gather(events["event"].astype(np.int64))
    listings_collections = catalog.collections["collection_id"].to_numpy()
    frame = pl.DataFrame(
        {
            "shop_id": pl.repeat(catalog.spec.shop_id, len(ts_us), eager=True),
            "buyer_id": pl.Series(shop.population.buyer_ids.tolist()).gather(
                shop.script.session_buyer[events["session"]]
            ),
            "session_id": pl.Series(events["session"] + shop_number * 10_000_000)
            .cast(pl.String)
            .str.zfill(9),
            "ts": pl.Series(ts_us).cast(pl.Datetime("us", "UTC")),
            "event_type": event_type,
            "product_id": pl.Series(catalog.products["product_id"].tolist()).gather(
                nullable(events["product"])
            ),
            "collection_id": pl.Series(listings_collections.tolist()).gather(
                nullable(events["collection"])
            ),
            "query": pl.Series(catalog.queries.reshape(-1).tolist()).gather(
                nullable(events["query"])
            ),
            "quantity": pl.Series(events["quantity"]),
            "price": pl.Series(np.round(events["price"], 2)),
        }
    )
    return frame.with_columns(
        ("s" + pl.col("session_id")).alias("session_id"),
        pl.when(pl.col("event_type").is_in(_QUANTITY_EVENTS))
        .then(pl.col("quantity"))
        .alias("quantity"),
        pl.when(pl.col("event_type").is_in(_PRICED_EVENTS)).then(pl.col("price")).alias("price"),
    )


def _outcome_summary(outcome: SessionOutcome) -> dict[str, float]:
    n = len(outcome.purchased)
    return {
        "sessions": int(n),
        "atc_rate": float(outcome.added_to_cart.mean()) if n else 0.0,
        "checkout_rate": float(outcome.checked_out.mean()) if n else 0.0,
        "conversion_rate": float(outcome.purchased.mean()) if n else 0.0,
        "revenue": float(outcome.revenue.sum()),
        "revenue_per_session": float(outcome.revenue.sum() / n) if n else 0.0,
    }


def relative_effects(
    control: dict[str, float], treatment: dict[str, float]
) -> dict[str, float | None]:
    """Relative effects, treatment / control - 1; None (undefined) where the control is 0."""
    keys = ("atc_rate", "checkout_rate", "conversion_rate", "revenue_per_session")
    return {k: (treatment[k] - control[k]) / control[k] if control[k] else None for k in keys}


def _pool(outcomes: list[SessionOutcome]) -> SessionOutcome:
    return SessionOutcome(
        *(
            np.concatenate([getattr(o, k) for o in outcomes])
            for k in ("added_to_cart", "checked_out", "purchased", "revenue")
        )
    )


def ab_outcomes(
    config: SyntheticConfig,
    shops: list[_Shop] | None = None,
    control_outcomes: list[SessionOutcome] | None = None,
) -> list[dict[str, Any]]:
    """The human population's outcome in control and in each treatment, per shop and pooled
    over evaluation shops and over all shops, with relative effects (treatment/control - 1)."""
    shops = shops if shops is not None else _shops(config)
    control = control_outcomes or [_play(config, s, config.control, False) for s in shops]
    results = []
    for variant in config.ab_tests:
        treated = [_play(config, s, variant, False) for s in shops]
        per_shop = {}
        for shop, c, t in zip(shops, control, treated, strict=True):
            cs, ts = _outcome_summary(c), _outcome_summary(t)
            per_shop[shop.catalog.spec.shop_id] = {
                "role": shop.role,
                "control": cs,
                "treatment": ts,
                "effect": relative_effects(cs, ts),
            }
        pooled = {}
        for scope, keep in (("eval", lambda s: s.role == "eval"), ("all", lambda s: True)):
            idx = [i for i, s in enumerate(shops) if keep(s)]
            cs = _outcome_summary(_pool([control[i] for i in idx]))
            ts = _outcome_summary(_pool([treated[i] for i in idx]))
            pooled[scope] = {"control": cs, "treatment": ts, "effect": relative_effects(cs, ts)}
        results.append(
            {
                "name": variant.name,
                "control": config.control.to_dict(),
                "treatment": variant.to_dict(),
                "pooled": pooled,
                "per_shop": per_shop,
            }
        )
    return results


def generate(config: SyntheticConfig, progress: bool = True) -> SyntheticData:
    """Generate catalogs, buyers, sessions and events for every shop, and the planted truth."""
    shops = _shops(config, progress)
    frames, controls = [], []
    for number, shop in enumerate(tqdm(shops, desc="shops: events", disable=not progress), start=1):
        outcome = _play(config, shop, config.control, with_events=True)
        controls.append(outcome)
        frames.append(_events_frame(config, shop, number, outcome))
    events = conform(
        pl.concat(frames).sort("ts", "shop_id", "session_id", maintain_order=True),
        EVENT_SCHEMA,
        "synthetic events",
    )
    logger.info(
        "generated %d events, %d sessions, %d buyer-shop pairs in %d shops",
        len(events),
        sum(len(s.script.session_buyer) for s in shops),
        sum(len(s.population.buyer_ids) for s in shops),
        len(shops),
    )
    type_names = [t.name for t in config.buyer_types]
    planted = {
        "generator": config.to_dict(),
        "buyer_types": [t.to_dict() for t in config.buyer_types],
        "shops": [
            {
                "shop_id": s.catalog.spec.shop_id,
                "name": s.catalog.spec.name,
                "verticals": list(s.catalog.spec.verticals),
                "price_level": s.catalog.spec.price_level,
                "role": s.role,
                "mixture": dict(zip(type_names, np.round(s.mixture, 6).tolist(), strict=True)),
                "n_buyers": len(s.population.buyer_ids),
            }
            for s in shops
        ],
        "buyer_type": {
            s.catalog.spec.shop_id: {
                name: sorted(s.population.buyer_ids[s.population.type_index == j].tolist())
                for j, name in enumerate(type_names)
            }
            for s in shops
        },
        "control_outcome": {
            s.catalog.spec.shop_id: _outcome_summary(c)
            for s, c in zip(shops, controls, strict=True)
        },
        "ab_tests": ab_outcomes(config, shops, controls),
    }
    return SyntheticData(
        events=events,
        products=pd.concat(
            [s.catalog.products[_PRODUCT_COLUMNS] for s in shops], ignore_index=True
        ),
        collections=pd.concat([s.catalog.collections for s in shops], ignore_index=True),
        collection_products=pd.concat(
            [s.catalog.collection_products for s in shops], ignore_index=True
        ),
        planted_truth=planted,
    )


def planted_buyer_types(planted_truth: dict[str, Any]) -> pd.DataFrame:
    """The planted truth's buyer -> type mapping as a (shop_id, buyer_id, buyer_type) table."""
    rows = [
        (shop, buyer, type_name)
        for shop, by_type in planted_truth["buyer_type"].items()
        for type_name, buyers in by_type.items()
        for buyer in buyers
    ]
    return pd.DataFrame(rows, columns=["shop_id", "buyer_id", "buyer_type"]).sort_values(
        ["shop_id", "buyer_id"], ignore_index=True
    )


__all__ = ["SyntheticConfig", "SyntheticData", "ab_outcomes", "generate", "planted_buyer_types"]
