"""The data_enrichment pipeline (SimPersona 2.1.1): validate, sessionise, enrich, aggregate."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
