"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The product's stages in data-flow order; `__default__` chains them. `synthetic_data` is not
# part of it: it (re)generates the raw layer, which ships with the repository.
STAGES = (
    "data_enrichment",
    "feature_engineering",
    "vq_vae",
    "persona_mining",
    "trace_generation",
    "sft",
    "simulation",
    "alignment",
)


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline by folder name, plus `__default__` = all stages.

    Kedro loads only the pipelines a run asks for (all of them for `__default__`).
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[n] for n in STAGES if n in pipelines), Pipeline([]))
    return pipelines
