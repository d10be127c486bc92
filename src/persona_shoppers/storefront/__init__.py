"""The textual storefront: catalog search, store variants (A/B configurations), pages and
actions. See docs/storefront.md."""

from .actions import ACTION_ARGUMENTS, ACTION_SCHEMA, ACTION_TYPES, Action, InvalidAction
from .search import ProductSearch
from .store import (
    EMPTY_CART_LINE,
    Page,
    StepResult,
    Store,
    Visit,
    approx_token_count,
    build_stores,
    listed_title,
)
from .variants import RANKINGS, StoreVariant

__all__ = [
    "ACTION_ARGUMENTS",
    "ACTION_SCHEMA",
    "ACTION_TYPES",
    "EMPTY_CART_LINE",
    "RANKINGS",
    "Action",
    "InvalidAction",
    "Page",
    "ProductSearch",
    "StepResult",
    "Store",
    "StoreVariant",
    "Visit",
    "approx_token_count",
    "build_stores",
    "listed_title",
]
