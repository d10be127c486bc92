"""The synthetic_data pipeline: (re)generate the raw layer with its planted truth."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
