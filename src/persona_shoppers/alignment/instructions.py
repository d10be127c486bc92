"""SimPersona's instruction-following benchmark (section 3.4, Table 4, appendix J).

A task is a sampled human session that reached a funnel action (add to cart, checkout or
purchase), turned into explicit step-by-step instructions: the session's actions up to its
deepest funnel action. Tasks are drawn evenly from bins of length (3-5, 6-10, 11-20 and 21 or more
navigation actions by default). An agent follows the instructions in the textual store; a run
succeeds when it logs the required funnel action. After the run the agent is asked whether it
reached its goal, which gives the calibration of its own claim against what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import polars as pl

logger = logging.getLogger(__name__)

# The deepest funnel action a session reached decides what the task requires.
FUNNEL = ("purchase", "checkout_start", "add_to_cart")
REQUIRED = {"purchase": "purchase", "checkout_start": "checkout", "add_to_cart": "cart"}
_NAVIGATION = (
    "search",
    "product_view",
    "collection_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
)


def _step(event: dict) -> str:
    kind = event["event_type"]
    if kind == "search":
        return f'search "{event["query"]}"'
    if kind == "product_view":
        return f'view "{event["title"]}"'
    if kind == "collection_view":
        return f'open the collection "{event["collection_title"]}"'
    if kind == "add_to_cart":
        return f'add "{event["title"]}" to the cart'
    if kind == "remove_from_cart":
        return f'remove "{event["title"]}" from the cart'
    if kind == "checkout_start":
        return "go to checkout"
    return "purchase"


def instruction_goal(steps: Sequence[str]) -> str:
    """The goal line: numbered steps, then an instruction to end."""
    listed = "; ".join(f"{i + 1}) {s}" for i, s in enumerate(steps))
    return f"Follow these steps in order: {listed}. Then end."


def instruction_tasks(
    events: pl.DataFrame,
    n_per_bin: int,
    length_bins: Sequence[Sequence[int | None]],
    seed: int = 0,
) -> pd.DataFrame:
    """Tasks from the sessions of ``events`` (one shop or many), ``n_per_bin`` per length bin.

    A bin ``[lo, hi]`` holds sessions with lo..hi navigation actions up to the deepest funnel
    action (``hi`` null: no upper end). Columns: task_id, shop_id, buyer_id, session_id,
    n_actions, required (cart | checkout | purchase), goal, length_bin."""
    nav = events.filter(pl.col("event_type").is_in(_NAVIGATION)).sort(["session_id", "ts"])
    rows = []
    for (session_id,), group in nav.group_by(["session_id"], maintain_order=True):
        kinds = group["event_type"].to_list()
        deepest = next((k for k in FUNNEL if k in kinds), None)
        if deepest is None:
            continue
        last = max(i for i, k in enumerate(kinds) if k == deepest)
        steps = [_step(e) for e in group.head(last + 1).iter_rows(named=True)]
        first = group.row(0, named=True)
        rows.append(
            {
                "shop_id": first["shop_id"],
                "buyer_id": first["buyer_id"],
                "session_id": session_id,
                "n_actions": len(steps),
                "required": REQUIRED[deepest],
                "goal": instruction_goal(steps),
            }
        )
    found = pd.DataFrame(rows)
    picked = []
    for b, (lo, hi) in enumerate(length_bins):
        label = f"{lo}plus" if hi is None else f"{lo}-{hi}"
        if found.empty:
            logger.warning("instruction tasks: no session reached a funnel action")
            break
        pool = found[(found["n_actions"] >= lo) & (found["n_actions"] <= (hi or np.inf))]
        if len(pool) < n_per_bin:
            logger.warning(
                "instruction tasks: bin %s has %d sessions, %d wanted", label, len(pool), n_per_bin
            )
        rng = np.random.default_rng([seed, b])
        chosen = pool.iloc[np.sort(rng.permutation(len(pool))[:n_per_bin])].copy()
        chosen["length_bin"] = label
        picked.append(chosen)
    tasks = pd.concat(picked, ignore_index=True) if picked else found.assign(length_bin=None)
    tasks.insert(0, "task_id", [f"task{i:03d}" for i in range(len(tasks))])
    return tasks


def task_success(events: Sequence[dict], required: str) -> bool:
    """Whether a run's events include the funnel action the task requires."""
    wanted = {v: k for k, v in REQUIRED.items()}[required]
    return any(e["event_type"] == wanted for e in events)
