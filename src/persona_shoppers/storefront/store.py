"""The textual storefront: one immutable store per shop, pages as compact text, actions as JSON;
each shopper's state is a :class:`Visit` that :meth:`Store.step` advances, returning
raw-contract events.

See docs/storefront.md.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .actions import Action, InvalidAction
from .search import ProductSearch
from .variants import StoreVariant

EMPTY_CART_LINE = "Cart: empty"  # the last line of every page while the cart is empty
PRODUCT_COLUMNS = ("product_id", "title", "category", "brand", "price", "rating", "review_count")
_TOKEN_PIECES = re.compile(r"\d|[A-Za-z]+|[^\sA-Za-z\d]")


def approx_token_count(text: str) -> int:
    """A tokenizer-free token count: each digit, word and symbol is one token.

    Byte-pair tokenizers split digits one by one (SmolLM2 does) and keep common words whole,
    so this tracks them closely on store pages; pass a real tokenizer's count for exact caps.
    """
    return len(_TOKEN_PIECES.findall(text))


@dataclass(frozen=True)
class Page:
    """Where a visitor is: ``kind`` plus its subject (query, product or collection id)."""

    kind: str  # home | search | collection | product | cart | checkout | confirmation
    subject: str | None = None


@dataclass
class Visit:
    """One shopper's visit: pages walked, cart, outcome so far. Advanced by ``Store.step``."""

    history: list[Page] = field(default_factory=lambda: [Page("home")])
    cart: dict[str, int] = field(default_factory=dict)  # product id -> quantity, insertion order
    steps: int = 0
    errors: int = 0
    outcome: str | None = None  # None while open; "ended" | "purchased" once done

    @property
    def page(self) -> Page:
        return self.history[-1]

    @property
    def done(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True)
class StepResult:
    """What one step returns: the page text, the events it logged, and any error."""

    observation: str
    events: list[dict[str, Any]]
    error: str | None = None
    rule: str | None = None  # the rule an invalid action broke (InvalidAction.rule)

    @property
    def valid(self) -> bool:
        return self.error is None


def _event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "product_id": fields.get("product_id"),
        "collection_id": fields.get("collection_id"),
        "query": fields.get("query"),
        "quantity": fields.get("quantity"),
        "price": fields.get("price"),
    }


def _short_ids(shop_id: str, ids: Iterable[str]) -> dict[str, str]:
    """Display ids: the shop prefix (``shop01-``) removed when every id carries it."""
    ids = list(ids)
    prefix = f"{shop_id}-"
    if ids and all(i.startswith(prefix) and len(i) > len(prefix) for i in ids):
        return {i: i[len(prefix) :] for i in ids}
    return {i: i for i in ids}


class Store:
    """One shop's storefront under a variant (ranking, price multiplier, page size).

    Args:
        shop_id: the shop.
        products: the shop's rows of ``raw_products``.
        collections: the shop's rows of ``raw_collections`` (collection_id, title).
        collection_products: (collection_id, product_id) membership rows of the shop.
        variant: the A/B configuration; control and treatment differ only here.
        max_observation_tokens: cap on a page's text; listings and descriptions are cut to fit.
        count_tokens: the token counter the cap uses (default :func:`approx_token_count`).
    """

    def __init__(
        self,
        shop_id: str,
        products: pd.DataFrame,
        collections: pd.DataFrame,
        collection_products: pd.DataFrame,
        variant: StoreVariant | None = None,
        max_observation_tokens: int = 256,
        count_tokens: Callable[[str], int] = approx_token_count,
    ):
        missing = [c for c in PRODUCT_COLUMNS if c not in products.columns]
        if missing:
            raise ValueError(f"Store({shop_id}): products lack columns {missing}")
        if max_observation_tokens < 32:
            raise ValueError(f"max_observation_tokens must be >= 32, got {max_observation_tokens}")
        self.shop_id = shop_id
        self.variant = variant or StoreVariant()
        self.max_observation_tokens = max_observation_tokens
        self.count_tokens = count_tokens
        self.products = products.reset_index(drop=True)
        self.search_index = ProductSearch(self.products)
        self._position = {pid: i for i, pid in enumerate(self.products["product_id"])}
        self.display_id = _short_ids(shop_id, self.products["product_id"])
        self._by_display = {short: pid for pid, short in self.display_id.items()}
        self.collections = dict(
            zip(collections["collection_id"], collections["title"], strict=True)
        )
        members = collection_products[collection_products["collection_id"].isin(self.collections)]
        self._members = {
            cid: np.array([self._position[p] for p in group["product_id"] if p in self._position])
            for cid, group in members.groupby("collection_id", sort=False)
        }
        self.collection_display_id = _short_ids(shop_id, self.collections)
        self._searches: dict[str, tuple[list[str], int]] = {}
        self._collection_by_display = {s: c for c, s in self.collection_display_id.items()}

    def with_variant(self, variant: StoreVariant) -> Store:
        """This store under another variant (an A/B arm). The catalog, search index and ids
        are shared: a variant changes only ranking, prices and page size."""
        store = copy.copy(self)
        store.variant = variant
        store._searches = {}  # memoised results depend on the variant
        return store

    # ------------------------------------------------------------------ lookups
    def resolve_product(self, reference: str) -> str | None:
        """The product id a reference (full or display id) names, or None."""
        if reference in self._position:
            return reference
        return self._by_display.get(reference)

    def resolve_collection(self, reference: str) -> str | None:
        if reference in self.collections:
            return reference
        return self._collection_by_display.get(reference)

    def price(self, product_id: str) -> float:
        """The price this store charges (catalog price times the variant's multiplier)."""
        row = self._position[product_id]
        return round(float(self.products.at[row, "price"]) * self.variant.price_multiplier, 2)

    def title(self, product_id: str) -> str:
        return str(self.products.at[self._position[product_id], "title"])

    def search_results(self, query: str) -> list[str]:
        """Product ids the results page for ``query`` shows, in order (one page)."""
        return self._search(query)[0]

    def _search(self, query: str) -> tuple[list[str], int]:
        """(ids shown, number of matches) for a query; memoised, a store never changes."""
        if query not in self._searches:
            ranked = self.search_index.search(query, self.variant)
            shown = self.products["product_id"].to_numpy()[ranked[: self.variant.page_size]]
            self._searches[query] = (shown.tolist(), len(ranked))
        return self._searches[query]

    def collection_listing(self, collection_id: str) -> list[str]:
        members = self._members.get(collection_id, np.array([], dtype=int))
        ranked = self.search_index.rank(members.astype(int), self.variant)[: self.variant.page_size]
        return self.products["product_id"].to_numpy()[ranked].tolist()

    def listed_products(self, page: Page) -> list[str]:
        """Product ids a page shows (what an agent can pick from)."""
        if page.kind == "search":
            return self.search_results(page.subject)
        if page.kind == "collection":
            return self.collection_listing(page.subject)
        if page.kind == "product":
            return [page.subject]
        return []

    # ------------------------------------------------------------------ visits
    def start(self) -> tuple[Visit, StepResult]:
        """A new visit on the home page (logs the landing ``page_view``)."""
        visit = Visit()
        return visit, StepResult(self.render(visit), [_event("page_view")])

    def step(self, visit: Visit, action: Action | dict | str) -> StepResult:
        """Apply one action (an :class:`Action`, its dict or its JSON text) to ``visit``."""
        if visit.done:
            raise RuntimeError(f"the visit already ended ({visit.outcome}); start a new one")
        visit.steps += 1
        try:
            if isinstance(action, str):
                action = Action.parse(action)
            elif isinstance(action, dict):
                action = Action.from_dict(action)
            events = self._apply(visit, action)
        except InvalidAction as err:
            visit.errors += 1
            return StepResult(
                f"Error: {err}.\n{self.render(visit)}", [], error=str(err), rule=err.rule
            )
        return StepResult(self.render(visit), events)

    def _product(self, reference: str) -> str:
        product_id = self.resolve_product(reference)
        if product_id is None:
            raise InvalidAction(f"no product {reference!r} in this store", "unknown_product")
        return product_id

    def _apply(self, visit: Visit, action: Action) -> list[dict[str, Any]]:
        kind, arg = action.type, action.argument
        if kind == "search":
            query = arg.strip()
            visit.history.append(Page("search", query))
            return [_event("search", query=query)]
        if kind == "view":
            product_id = self._product(arg)
            visit.history.append(Page("product", product_id))
            return [_event("product_view", product_id=product_id, price=self.price(product_id))]
        if kind == "open":
            collection_id = self.resolve_collection(arg)
            if collection_id is None:
                raise InvalidAction(f"no collection {arg!r} in this store", "unknown_collection")
            visit.history.append(Page("collection", collection_id))
            return [_event("collection_view", collection_id=collection_id)]
        if kind == "add_to_cart":
            product_id = self._product(arg)
            visit.cart[product_id] = visit.cart.get(product_id, 0) + 1
            visit.history.append(Page("cart"))
            return [
                _event(
                    "add_to_cart", product_id=product_id, quantity=1, price=self.price(product_id)
                )
            ]
        if kind == "remove_from_cart":
            product_id = self._product(arg)
            if product_id not in visit.cart:
                raise InvalidAction(
                    f"{self.display_id[product_id]} is not in the cart", "not_in_cart"
                )
            quantity = visit.cart.pop(product_id)
            visit.history.append(Page("cart"))
            return [
                _event(
                    "remove_from_cart",
                    product_id=product_id,
                    quantity=quantity,
                    price=self.price(product_id),
                )
            ]
        if kind == "view_cart":
            visit.history.append(Page("cart"))
            return []
        if kind == "checkout":
            if not visit.cart:
                raise InvalidAction("the cart is empty, nothing to check out", "empty_cart")
            visit.history.append(Page("checkout"))
            return [_event("checkout_start")]
        if kind == "purchase":
            if visit.page.kind != "checkout":
                raise InvalidAction(
                    "purchase is only possible on the checkout page", "not_at_checkout"
                )
            visit.history.append(Page("confirmation"))
            visit.outcome = "purchased"
            return [
                _event("purchase", product_id=p, quantity=q, price=self.price(p))
                for p, q in visit.cart.items()
            ]
        if kind == "back":
            if len(visit.history) < 2:
                raise InvalidAction("there is no previous page", "no_previous_page")
            visit.history.pop()
            return []
        visit.outcome = "ended"  # kind == "end"
        return []

    # ------------------------------------------------------------------ pages
    def render(self, visit: Visit) -> str:
        """The current page of ``visit`` as text, within the token cap."""
        page = visit.page
        header, lines, tail = getattr(self, f"_render_{page.kind}")(page, visit)
        return self._fit(header, lines, tail)

    def _fit(self, header: str, lines: list[str], tail: list[str]) -> str:
        """Header, as many listing lines as the cap allows, a note on the rest, then the tail."""
        budget = self.max_observation_tokens - self.count_tokens("\n".join([header, *tail]))
        kept: list[str] = []
        for i, line in enumerate(lines):
            rest = len(lines) - i - 1
            need = self.count_tokens(line) + 1
            reserve = self.count_tokens(f"(+{rest} more not shown)") + 1 if rest else 0
            if need + reserve > budget:
                kept.append(f"(+{len(lines) - i} more not shown)")
                break
            kept.append(line)
            budget -= need
        return "\n".join([header, *kept, *tail])

    def listing_line(self, product_id: str) -> str:
        """One product as a listing shows it: display id, title, brand, price, rating."""
        row = self.products.loc[self._position[product_id]]
        title, brand = str(row["title"]), str(row["brand"] or "")
        by = "" if not brand or title.startswith(brand) else f" by {brand}"
        rating = "" if pd.isna(row["rating"]) else f" | {row['rating']:.1f}/5"
        return (
            f"- {self.display_id[product_id]}: {title}{by} | ${self.price(product_id):.2f}{rating}"
        )

    def _cart_line(self, visit: Visit) -> str:
        if not visit.cart:
            return EMPTY_CART_LINE
        total = sum(self.price(p) * q for p, q in visit.cart.items())
        return f"Cart: {sum(visit.cart.values())} item(s), ${total:.2f}"

    def _render_home(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        lines = [f"- {self.collection_display_id[c]}: {t}" for c, t in self.collections.items()]
        return (
            "[home] Search the store or open a collection. Collections:",
            lines,
            [self._cart_line(visit)],
        )

    def _render_search(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        shown, total = self._search(page.subject)
        header = f'[search] "{page.subject}": {total} results' + (
            f", showing 1-{len(shown)}" if shown else ""
        )
        return header, [self.listing_line(p) for p in shown], [self._cart_line(visit)]

    def _render_collection(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        shown = self.collection_listing(page.subject)
        header = f"[collection] {self.collections[page.subject]}: {len(shown)} products shown"
        return header, [self.listing_line(p) for p in shown], [self._cart_line(visit)]

    def _render_product(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        row = self.products.loc[self._position[page.subject]]
        rating = (
            ""
            if pd.isna(row["rating"])
            else f" | {row['rating']:.1f}/5 from {int(row['review_count'] or 0)} reviews"
        )
        header = (
            f"[product] {self.display_id[page.subject]}: {row['title']}\n"
            f"Brand: {row['brand']} | ${self.price(page.subject):.2f}{rating}"
        )
        tail = [self._cart_line(visit)]
        room = self.max_observation_tokens - self.count_tokens("\n".join([header, *tail])) - 1
        words = str(row.get("description") or "").split()
        kept: list[str] = []
        for word in words:
            if self.count_tokens(" ".join([*kept, word, "..."])) > room:
                kept.append("...")
                break
            kept.append(word)
        return header, [" ".join(kept)] if kept else [], tail

    def _render_cart(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        lines = [
            f"- {self.display_id[p]}: {self.title(p)} x{q} | ${self.price(p) * q:.2f}"
            for p, q in visit.cart.items()
        ]
        return "[cart]", lines, [self._cart_line(visit)]

    def _render_checkout(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        header, lines, tail = self._render_cart(page, visit)
        return "[checkout] Review your order, then purchase.", lines, tail

    def _render_confirmation(self, page: Page, visit: Visit) -> tuple[str, list[str], list[str]]:
        return "[confirmation] Thank you, your order is placed.", [], [self._cart_line(visit)]


def listed_title(observation: str, display_id: str) -> str | None:
    """The title a listing page shows for ``display_id`` (the line of
    :meth:`Store.listing_line`, brand suffix included), None where the page does not list it."""
    match = re.search(rf"^- {re.escape(display_id)}: (.+?) \| \$", observation, re.MULTILINE)
    return match.group(1) if match else None


def build_stores(
    products: pd.DataFrame,
    collections: pd.DataFrame,
    collection_products: pd.DataFrame,
    shops: Iterable[str] | None = None,
    variant: StoreVariant | None = None,
    max_observation_tokens: int = 256,
) -> dict[str, Store]:
    """One :class:`Store` per shop (all shops in ``products`` unless ``shops`` is given)."""
    wanted = sorted(products["shop_id"].unique()) if shops is None else list(shops)
    unknown = sorted(set(wanted) - set(products["shop_id"]))
    if unknown:
        raise ValueError(f"build_stores: no products for shops {unknown}")
    return {
        shop: Store(
            shop,
            products[products["shop_id"] == shop],
            collections[collections["shop_id"] == shop],
            collection_products[collection_products["shop_id"] == shop],
            variant=variant,
            max_observation_tokens=max_observation_tokens,
        )
        for shop in wanted
    }
