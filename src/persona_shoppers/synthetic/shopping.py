"""The behavioural process that generates human shopping sessions, vectorised with numpy. Every
random number a session needs is drawn once into a store-independent :class:`SessionScript`,
so control and treatment stores replay the same draws (common random numbers).

See docs/synthetic_data.md, "What is generated" and "A/B tests with a human ground truth".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract import EVENT_TYPES
from ..storefront import ProductSearch, StoreVariant
from .buyer_types import BuyerType
from .catalog import QUERY_STYLES, ShopCatalog

MAX_PAGE = 24  # the most results any store variant may show on one page
MAX_CLICKS = 6  # the most product views in one episode
SEARCH, COLLECTION, DIRECT = 0, 1, 2
EVENT_CODES = {name: i for i, name in enumerate(EVENT_TYPES)}
# Mean seconds a buyer spends on a page of each event type before the next event
# (product pages use the buyer type's dwell instead).
_PAGE_DWELL_S = np.array([12.0, 25.0, np.nan, 15.0, 10.0, 8.0, 45.0, 20.0])


@dataclass
class Population:
    """One shop's buyers; arrays indexed by buyer."""

    buyer_ids: np.ndarray  # object (str)
    type_index: np.ndarray  # int, into the buyer type list
    interests: np.ndarray  # (n_buyers, n_product_types) weights summing to 1
    favourite_brand: np.ndarray  # int, into the shop's brands
    n_sessions: np.ndarray  # int >= 1


@dataclass
class SessionScript:
    """Every random draw of a population's sessions, independent of the store variant."""

    session_buyer: np.ndarray  # (S,) buyer index
    episode_session: np.ndarray  # (E,) session index
    episode_rank: np.ndarray  # (E,) position of the episode in its session
    episode_mode: np.ndarray  # (E,) SEARCH / COLLECTION / DIRECT
    target: np.ndarray  # (E,) product the buyer is after
    query_style: np.ndarray  # (E,) index into QUERY_STYLES
    query_variant: np.ndarray  # (E,)
    collection_pick: np.ndarray  # (E,) uniform: which collection an episode opens
    n_clicks: np.ndarray  # (E,) wanted product views
    click_noise: np.ndarray  # (E, MAX_PAGE) Gumbel noise of the choice model
    cart_draw: np.ndarray  # (E, MAX_CLICKS) uniforms
    quantity: np.ndarray  # (E, MAX_CLICKS) quantity if carted
    remove_draw: np.ndarray  # (E, MAX_CLICKS) uniforms
    checkout_draw: np.ndarray  # (S,) uniforms
    purchase_draw: np.ndarray  # (S,) uniforms


@dataclass
class SessionOutcome:
    """What happened in each session under one store variant, and the events if requested."""

    added_to_cart: np.ndarray  # (S,) bool
    checked_out: np.ndarray  # (S,) bool
    purchased: np.ndarray  # (S,) bool
    revenue: np.ndarray  # (S,) float
    events: dict[str, np.ndarray] | None = (
        None  # columns: session, event, product, collection, query...
    )


def _type_array(types: list[BuyerType], name: str) -> np.ndarray:
    return np.array([getattr(t, name) for t in types], dtype=float)


def draw_population(
    catalog: ShopCatalog,
    types: list[BuyerType],
    mixture: np.ndarray,
    buyer_ids: np.ndarray,
    window_days: float,
    rng: np.random.Generator,
) -> Population:
    """Draw buyer types from the shop's mixture, then each buyer's interests and brand."""
    n = len(buyer_ids)
    n_types = len(catalog.type_names)
    type_index = rng.choice(len(types), size=n, p=mixture)
    type_share = np.bincount(catalog.products["type_index"], minlength=n_types) / catalog.n_products
    n_interests = np.minimum(_type_array(types, "n_interests")[type_index].astype(int), n_types)
    # Interests: the buyer's n_interests product types (Gumbel top-k, weighted by how much of
    # the catalog each type is), with Dirichlet weights among them.
    keys = np.log(type_share)[None, :] + rng.gumbel(size=(n, n_types))
    order = np.argsort(-keys, axis=1)
    chosen = np.arange(n_types)[None, :] < n_interests[:, None]
    weights = rng.gamma(1.5, size=(n, n_types)) * chosen
    interests = np.zeros((n, n_types))
    np.put_along_axis(interests, order, weights, axis=1)
    interests /= interests.sum(axis=1, keepdims=True)
    brand_share = np.bincount(catalog.products["brand_index"]) / catalog.n_products
    favourite_brand = rng.choice(len(brand_share), size=n, p=brand_share)
    expected = _type_array(types, "sessions_per_year")[type_index] * window_days / 365.0
    n_sessions = 1 + rng.poisson(np.maximum(expected - 1.0, 0.0))
    return Population(
        buyer_ids, type_index, interests, favourite_brand, np.minimum(n_sessions, 200)
    )


def _categorical_rows(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _product_arrays(catalog: ShopCatalog) -> tuple:
    """Per-product arrays the choice models use: type, brand, log relative price, rating."""
    products = catalog.products
    type_idx = products["type_index"].to_numpy()
    price = products["price"].to_numpy(dtype=float)
    median = np.array([np.median(price[type_idx == j]) for j in range(len(catalog.type_names))])
    log_rel_price = np.log(price / median[type_idx])
    popularity = np.log1p(products["review_count"].to_numpy(dtype=float))
    return type_idx, products["brand_index"].to_numpy(), log_rel_price, popularity


def draw_script(
    catalog: ShopCatalog,
    types: list[BuyerType],
    pop: Population,
    rng: np.random.Generator,
    chunk: int = 50_000,
) -> SessionScript:
    """Draw every session's random numbers for a population (store independent)."""
    session_buyer = np.repeat(np.arange(len(pop.buyer_ids)), pop.n_sessions)
    t = pop.type_index[session_buyer]
    bounced = rng.random(len(session_buyer)) < _type_array(types, "bounce_prob")[t]
    n_episodes = np.where(
        bounced, 0, 1 + rng.poisson(np.maximum(_type_array(types, "episodes_mean")[t] - 1, 0))
    )
    episode_session = np.repeat(np.arange(len(session_buyer)), n_episodes)
    starts = np.cumsum(n_episodes) - n_episodes
    episode_rank = np.arange(len(episode_session)) - starts[episode_session]
    eb = session_buyer[episode_session]
    et = pop.type_index[eb]
    n_ep = len(episode_session)

    mode_p = np.stack(
        [_type_array(types, k) for k in ("p_search", "p_collection", "p_direct")], axis=1
    )
    episode_mode = _categorical_rows(mode_p[et], rng)
    target_type = _categorical_rows(pop.interests[eb], rng)

    # The target product: within the target type, favour popular products, the buyer's brand,
    # and prices the buyer type likes.
    type_idx, brand_idx, log_rel_price, popularity = _product_arrays(catalog)
    loyalty = _type_array(types, "brand_loyalty")[et]
    sensitivity = _type_array(types, "price_sensitivity")[et]
    target = np.empty(n_ep, dtype=np.int64)
    for lo in range(0, n_ep, chunk):
        hi = min(lo + chunk, n_ep)
        util = (
            0.5 * popularity[None, :]
            + loyalty[lo:hi, None] * (brand_idx[None, :] == pop.favourite_brand[eb[lo:hi], None])
            - sensitivity[lo:hi, None] * log_rel_price[None, :]
            + rng.gumbel(size=(hi - lo, catalog.n_products))
        )
        util[type_idx[None, :] != target_type[lo:hi, None]] = -np.inf
        target[lo:hi] = np.argmax(util, axis=1)

    style_of_type = np.array([QUERY_STYLES.index(t.query_style) for t in types])
    # A buyer mostly writes in its type's style, sometimes tersely.
    query_style = np.where(rng.random(n_ep) < 0.8, style_of_type[et], QUERY_STYLES.index("terse"))
    views = _type_array(types, "views_per_episode")[et]
    n_clicks = np.minimum(rng.geometric(1.0 / np.maximum(views, 1.0)), MAX_CLICKS)
    n_clicks = np.where(episode_mode == DIRECT, 1, n_clicks)
    return SessionScript(
        session_buyer=session_buyer,
        episode_session=episode_session,
        episode_rank=episode_rank,
        episode_mode=episode_mode,
        target=target,
        query_style=query_style,
        query_variant=rng.integers(catalog.queries.shape[2], size=n_ep),
        collection_pick=rng.random(n_ep),
        n_clicks=n_clicks,
        click_noise=rng.gumbel(size=(n_ep, MAX_PAGE)).astype(np.float32),
        cart_draw=rng.random((n_ep, MAX_CLICKS)),
        quantity=np.where(rng.random((n_ep, MAX_CLICKS)) < 0.1, 2, 1),
        remove_draw=rng.random((n_ep, MAX_CLICKS)),
        checkout_draw=rng.random(len(session_buyer)),
        purchase_draw=rng.random(len(session_buyer)),
    )


class StoreListings:
    """Result lists of a shop under one variant: every precomputed query and every collection."""

    def __init__(
        self, catalog: ShopCatalog, variant: StoreVariant, search: ProductSearch | None = None
    ):
        search = search or ProductSearch(catalog.products)
        page = min(variant.page_size, MAX_PAGE)
        queries = catalog.queries.reshape(-1)
        cache: dict[str, np.ndarray] = {}
        self.query_results = np.full((len(queries), MAX_PAGE), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            if query not in cache:
                cache[query] = search.search(query, variant, limit=page)
            hits = cache[query]
            self.query_results[i, : len(hits)] = hits
        self.query_results = self.query_results.reshape(*catalog.queries.shape, MAX_PAGE)
        position = {pid: i for i, pid in enumerate(catalog.products["product_id"])}
        members = catalog.collection_products.groupby("collection_id", sort=True)["product_id"]
        self.collection_ids = catalog.collections["collection_id"].to_numpy()
        self.collection_results = np.full((len(self.collection_ids), MAX_PAGE), -1, dtype=np.int64)
        self.type_collection = np.zeros(len(catalog.type_names), dtype=np.int64)
        for c, cid in enumerate(self.collection_ids):
            idx = np.array([position[p] for p in members.get_group(cid)], dtype=np.int64)
            ranked = search.rank(idx, variant)[:page]
            self.collection_results[c, : len(ranked)] = ranked
        titles = catalog.collections["title"].tolist()
        for j, name in enumerate(catalog.type_names):
            self.type_collection[j] = titles.index(name)
        self.n_special = len(self.collection_ids) - len(catalog.type_names)


def play(
    catalog: ShopCatalog,
    types: list[BuyerType],
    pop: Population,
    script: SessionScript,
    variant: StoreVariant,
    listings: StoreListings,
    with_events: bool,
) -> SessionOutcome:
    """Play a script in a store variant: the sessions' funnel outcomes (and events)."""
    products = catalog.products
    type_idx, brand_idx, log_rel_price, _ = _product_arrays(catalog)
    rating = products["rating"].to_numpy(dtype=float)
    price = products["price"].to_numpy(dtype=float) * variant.price_multiplier
    log_mult = np.log(variant.price_multiplier)
    n_sessions = len(script.session_buyer)
    eb = script.session_buyer[script.episode_session]
    et = pop.type_index[eb]
    t_arr = {
        k: _type_array(types, k) for k in ("price_sensitivity", "brand_loyalty", "rating_weight")
    }
    sens, loyalty, rating_w = (
        t_arr[k][et] for k in ("price_sensitivity", "brand_loyalty", "rating_weight")
    )

    # The page each episode shows.
    mode = script.episode_mode
    shown = np.full((len(mode), MAX_PAGE), -1, dtype=np.int64)
    is_search = mode == SEARCH
    shown[is_search] = listings.query_results[
        script.target[is_search], script.query_style[is_search], script.query_variant[is_search]
    ]
    is_coll = mode == COLLECTION
    # 70% open the collection of the target's product type, the rest a special collection.
    own = script.collection_pick < 0.7
    special = len(catalog.type_names) + np.minimum(
        ((script.collection_pick - 0.7) / 0.3 * listings.n_special).astype(np.int64),
        listings.n_special - 1,
    )
    collection = np.where(own, listings.type_collection[type_idx[script.target]], special)
    shown[is_coll] = listings.collection_results[collection[is_coll]]
    shown[mode == DIRECT, 0] = script.target[mode == DIRECT]

    # Choice model over the shown products: relevance to the target, brand, price, rating,
    # position; Gumbel noise makes the top-n clicks a draw without replacement.
    valid = shown >= 0
    safe = np.where(valid, shown, 0)
    same_type = type_idx[safe] == type_idx[script.target][:, None]
    utility = (
        1.5 * same_type
        + 2.0 * (safe == script.target[:, None])
        + 0.5 * loyalty[:, None] * (brand_idx[safe] == pop.favourite_brand[eb][:, None])
        - 0.6 * sens[:, None] * (log_rel_price[safe] + log_mult)
        + 0.3 * rating_w[:, None] * (rating[safe] - 4.2)
        - 0.4 * np.log2(np.arange(MAX_PAGE) + 1.0)[None, :]
        + script.click_noise
    )
    utility[~valid] = -np.inf
    order = np.argsort(-utility, axis=1, kind="stable")[:, :MAX_CLICKS]
    clicked = np.take_along_axis(shown, order, axis=1)
    n_valid = valid.sum(axis=1)
    slot = np.arange(MAX_CLICKS)[None, :]
    clicked_ok = slot < np.minimum(script.n_clicks, n_valid)[:, None]
    clicked = np.where(clicked_ok, clicked, -1)

    # Add to cart: the type's propensity, much lower for products off the buyer's intent,
    # scaled by price (elasticity = price sensitivity) and rating.
    c = np.where(clicked_ok, clicked, 0)
    match = np.where(type_idx[c] == type_idx[script.target][:, None], 1.0, 0.2)
    price_factor = np.clip(np.exp(-0.8 * sens[:, None] * (log_rel_price[c] + log_mult)), 0.25, 2.5)
    rating_factor = np.clip(1 + 0.3 * rating_w[:, None] * (rating[c] - 4.2), 0.5, 1.5)
    cart_p = _type_array(types, "cart_prob")[et][:, None] * match * price_factor * rating_factor
    carted = clicked_ok & (script.cart_draw < np.minimum(cart_p, 0.95))
    removed = carted & (script.remove_draw < _type_array(types, "remove_prob")[et][:, None])
    kept = carted & ~removed
    line_value = np.where(kept, price[c] * script.quantity, 0.0)

    session_of = script.episode_session
    has_atc = np.bincount(session_of, weights=carted.any(axis=1), minlength=n_sessions) > 0
    has_cart = np.bincount(session_of, weights=kept.any(axis=1), minlength=n_sessions) > 0
    st = pop.type_index[script.session_buyer]
    s_sens = _type_array(types, "price_sensitivity")[st]
    # A price change also weighs on the decision to pay (elasticity at checkout and payment).
    pay_factor = np.clip(np.exp(-0.5 * s_sens * log_mult), 0.3, 1.5)
    checked_out = has_cart & (
        script.checkout_draw < _type_array(types, "checkout_prob")[st] * pay_factor
    )
    purchased = checked_out & (
        script.purchase_draw
        < np.minimum(_type_array(types, "purchase_prob")[st] * pay_factor, 0.99)
    )
    revenue = (
        np.bincount(session_of, weights=line_value.sum(axis=1), minlength=n_sessions) * purchased
    )
    outcome = SessionOutcome(has_atc, checked_out, purchased, revenue)
    if with_events:
        outcome.events = _events(
            script,
            listings,
            collection,
            clicked,
            clicked_ok,
            carted,
            removed,
            kept,
            price,
            checked_out,
            purchased,
            catalog,
        )
    return outcome


def _events(
    script: SessionScript,
    listings: StoreListings,
    collection: np.ndarray,
    clicked: np.ndarray,
    clicked_ok: np.ndarray,
    carted: np.ndarray,
    removed: np.ndarray,
    kept: np.ndarray,
    price: np.ndarray,
    checked_out: np.ndarray,
    purchased: np.ndarray,
    catalog: ShopCatalog,
) -> dict[str, np.ndarray]:
    """Lay out the sessions' events in order: session, seq, event code, product, collection,
    query (index into the flattened query table), quantity, price."""
    n_sessions = len(script.session_buyer)
    stride = 2 * MAX_CLICKS + 2
    end_block = 10_000 * stride
    sess_e = script.episode_session
    base_seq = 1 + script.episode_rank * stride
    blocks: list[dict[str, np.ndarray]] = []

    def block(session, seq, code, product=None, coll=None, query=None, qty=None, prc=None):
        size = len(session)
        blocks.append(
            {
                "session": session,
                "seq": seq,
                "event": np.full(size, code, dtype=np.int8),
                "product": np.full(size, -1, dtype=np.int64) if product is None else product,
                "collection": np.full(size, -1, dtype=np.int64) if coll is None else coll,
                "query": np.full(size, -1, dtype=np.int64) if query is None else query,
                "quantity": np.zeros(size, dtype=np.int64) if qty is None else qty,
                "price": np.full(size, np.nan) if prc is None else prc,
            }
        )

    sessions = np.arange(n_sessions)
    block(sessions, np.zeros(n_sessions, dtype=np.int64), EVENT_CODES["page_view"])
    is_search = script.episode_mode == SEARCH
    flat_query = np.ravel_multi_index(
        (script.target, script.query_style, script.query_variant), catalog.queries.shape
    )
    block(
        sess_e[is_search], base_seq[is_search], EVENT_CODES["search"], query=flat_query[is_search]
    )
    is_coll = script.episode_mode == COLLECTION
    block(
        sess_e[is_coll], base_seq[is_coll], EVENT_CODES["collection_view"], coll=collection[is_coll]
    )

    e_idx, k_idx = np.nonzero(clicked_ok)
    view_seq = base_seq[e_idx] + 1 + 2 * k_idx
    prod = clicked[e_idx, k_idx]
    block(sess_e[e_idx], view_seq, EVENT_CODES["product_view"], product=prod, prc=price[prod])
    ce, ck = np.nonzero(carted)
    cprod = clicked[ce, ck]
    qty = script.quantity[ce, ck]
    block(
        sess_e[ce],
        base_seq[ce] + 2 + 2 * ck,
        EVENT_CODES["add_to_cart"],
        product=cprod,
        qty=qty,
        prc=price[cprod],
    )
    re, rk = np.nonzero(removed)
    rprod = clicked[re, rk]
    block(
        sess_e[re],
        end_block + base_seq[re] + rk,
        EVENT_CODES["remove_from_cart"],
        product=rprod,
        qty=script.quantity[re, rk],
        prc=price[rprod],
    )
    co = np.flatnonzero(checked_out)
    block(co, np.full(len(co), 2 * end_block), EVENT_CODES["checkout_start"])
    pe, pk = np.nonzero(kept & purchased[sess_e][:, None])
    pprod = clicked[pe, pk]
    block(
        sess_e[pe],
        3 * end_block + base_seq[pe] + pk,
        EVENT_CODES["purchase"],
        product=pprod,
        qty=script.quantity[pe, pk],
        prc=price[pprod],
    )
    events = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    order = np.lexsort((events["seq"], events["session"]))
    return {k: v[order] for k, v in events.items() if k != "seq"}


def event_offsets(
    events: dict[str, np.ndarray],
    session_type: np.ndarray,
    types: list[BuyerType],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds from session start for every event, and each session's duration.

    The gap before an event is the time spent on the previous page: the buyer type's dwell on
    product pages, a fixed mean elsewhere (exponential, between 1 s and 20 min).
    """
    session = events["session"]
    code = events["event"].astype(np.int64)
    dwell_mean = np.where(
        code == EVENT_CODES["product_view"],
        _type_array(types, "dwell_s")[session_type[session]],
        _PAGE_DWELL_S[code],
    )
    spent = np.clip(rng.exponential(dwell_mean), 1.0, 1200.0)
    first = np.r_[True, session[1:] != session[:-1]]
    gap = np.where(first, 0.0, np.r_[0.0, spent[:-1]])
    total = np.cumsum(gap)
    start_total = total[first]
    session_rank = np.cumsum(first) - 1
    offsets = total - start_total[session_rank]
    duration = np.zeros(session_type.shape[0])
    np.maximum.at(duration, session, offsets)
    return offsets, duration


def session_starts(
    session_buyer: np.ndarray, duration: np.ndarray, window_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Start of each session in seconds from the window start: random days, in order per buyer,
    never overlapping and at least 45 minutes apart (so a 30-minute sessioniser recovers them)."""
    min_gap = 45 * 60 + rng.exponential(6 * 3600, size=len(duration))
    need = duration + min_gap
    first = np.r_[True, session_buyer[1:] != session_buyer[:-1]]
    rank = np.cumsum(first) - 1
    csum = np.cumsum(need)
    before = csum - need - (csum - need)[first][rank]  # time needed by the buyer's earlier sessions
    total = np.bincount(rank, weights=need)[rank]
    u = rng.random(len(duration)) * np.maximum(window_s - total, 0.0)
    # Sort each buyer's draws, then push later sessions past earlier ones.
    u = u[np.lexsort((u, rank))]
    return u + before
