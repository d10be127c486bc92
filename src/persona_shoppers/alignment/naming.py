"""Alignment metric names: ``<task>/<metric>/<condition>``, one flat namespace shared by
``alignment_metrics`` (json), MLflow and the report (docs/alignment.md)."""

from __future__ import annotations

SEPARATOR = "/"


def metric_name(task: str, metric: str, condition: str) -> str:
    """The name of ``metric`` of ``task`` under ``condition`` (an agent condition, a baseline or
    a noise floor)."""
    return SEPARATOR.join((task, metric, condition))


def split_metric_name(name: str) -> tuple[str, str, str]:
    """``(task, metric, condition)`` of a name built by :func:`metric_name`."""
    parts = name.split(SEPARATOR, 2)
    if len(parts) != 3:
        raise ValueError(
            f"alignment metric name {name!r} is not <task>{SEPARATOR}<metric>{SEPARATOR}<condition>"
        )
    task, metric, condition = parts
    return task, metric, condition
