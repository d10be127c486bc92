"""Buyer feature vectors: layout, fitted transforms, one-pass featurisation."""

from .layout import FeatureLayout

__all__ = ["FeatureLayout"]
