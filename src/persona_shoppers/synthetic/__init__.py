"""Seeded synthetic multi-shop clickstreams with planted buyer types and A/B effects."""

from .buyer_types import DEFAULT_BUYER_TYPES, BuyerType
from .generator import SyntheticConfig, SyntheticData, ab_outcomes, generate, planted_buyer_types

__all__ = [
    "DEFAULT_BUYER_TYPES",
    "BuyerType",
    "SyntheticConfig",
    "SyntheticData",
    "ab_outcomes",
    "generate",
    "planted_buyer_types",
]
