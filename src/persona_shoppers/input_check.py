"""Fail fast, and say what to run, when a pipeline's persisted inputs are missing.

``kedro run --pipelines=alignment`` reads what the upstream pipelines persisted. Without this
hook a missing file surfaces as a load error deep in the run, after earlier nodes spent
minutes; with it the run stops before the first node with every missing dataset and the
command that makes it (``kedro run --pipelines=<the pipeline that outputs it>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, DataCatalog
from kedro.pipeline import Pipeline


class MissingInputError(RuntimeError):
    """A pipeline input that no earlier run has written."""


def _checkable(dataset: AbstractDataset) -> bool:
    """Datasets that can tell whether their data exists (not memory, not the base stub) and
    that a run needs (not ``optional``: the planted truth)."""
    inner = getattr(dataset, "_dataset", None)  # kedro-mlflow artifact wrappers
    if inner is not None and not isinstance(inner, dict):
        dataset = inner
    return (
        type(dataset)._exists is not AbstractDataset._exists
        and not hasattr(dataset, "_data")
        and not getattr(dataset, "optional", False)
    )


def missing_inputs(
    pipeline: Pipeline, catalog: DataCatalog, pipelines: Mapping[str, Pipeline]
) -> dict[str, list[str]]:
    """Free inputs of ``pipeline`` that are persisted but absent -> the registered pipelines
    that output them (``__default__`` left out)."""
    missing = {}
    for name in sorted(pipeline.inputs()):
        if name.startswith("params:") or name == "parameters" or name not in catalog:
            continue
        dataset = catalog.get(name)
        if _checkable(dataset) and not dataset.exists():
            missing[name] = sorted(
                p
                for p, pipe in pipelines.items()
                if p != "__default__" and name in pipe.all_outputs()
            )
    return missing


def missing_inputs_message(missing: Mapping[str, list[str]]) -> str:
    lines = ["these inputs have not been written yet:"]
    for name, producers in missing.items():
        how = (
            " or ".join(f"`kedro run --pipelines={p}`" for p in producers)
            if producers
            else "no pipeline makes it: add it to data/ (see docs/bring_your_own_data.md)"
        )
        lines.append(f"  - {name}: {how}")
    lines.append("or run everything upstream at once with `kedro run`.")
    return "\n".join(lines)


class MissingInputsHook:
    """Checks a run's free inputs before the first node (see the module docstring)."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        from kedro.framework.project import pipelines

        missing = missing_inputs(pipeline, catalog, pipelines)
        if missing:
            raise MissingInputError(missing_inputs_message(missing))
