"""Alignment metric names: ``<task>/<metric>/<condition>`` for a value, and
``<task>/<metric>/<condition>/<stat>`` for what qualifies it (``n``, ``ci_low``, ``ci_high``):
one flat namespace shared by ``alignment_metrics`` (json), MLflow and the report
(docs/alignment.md)."""

from __future__ import annotations

SEPARATOR = "/"
# What qualifies a value: its sample size and the bounds of its 95% interval.
STATS = ("n", "ci_low", "ci_high")
# The reference row of the funnel: the sessions of the buyers the agents stand for.
MATCHED_HUMANS = "matched_humans"


def metric_name(task: str, metric: str, condition: str, stat: str | None = None) -> str:
    """The name of ``metric`` of ``task`` under ``condition`` (an agent condition, a baseline or
    a noise floor), or of one of its ``STATS``."""
    if stat is not None and stat not in STATS:
        raise ValueError(f"metric stat must be one of {STATS}, got {stat!r}")
    return SEPARATOR.join((task, metric, condition, *([stat] if stat else [])))


def split_metric_name(name: str) -> tuple[str, str, str, str | None]:
    """``(task, metric, condition, stat)`` of a name built by :func:`metric_name` (``stat`` is
    None for the value itself)."""
    parts = name.split(SEPARATOR)
    if len(parts) == 4 and parts[3] in STATS:
        return parts[0], parts[1], parts[2], parts[3]
    if len(parts) != 3:
        raise ValueError(
            f"alignment metric name {name!r} is not <task>{SEPARATOR}<metric>{SEPARATOR}"
            f"<condition>[{SEPARATOR}<{'|'.join(STATS)}>]"
        )
    return parts[0], parts[1], parts[2], None
