"""The textual storefront: catalog search and store variants (A/B configurations)."""

from .search import ProductSearch
from .variants import RANKINGS, StoreVariant

__all__ = ["RANKINGS", "ProductSearch", "StoreVariant"]
