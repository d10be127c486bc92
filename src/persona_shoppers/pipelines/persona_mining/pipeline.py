"""The persona_mining pipeline: no nodes yet; its issue builds it."""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([])
