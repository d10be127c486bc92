"""Which rows share a forward pass: batches of similar length within a row and token budget.

See docs/llm.md ("How it is fast").
"""

from __future__ import annotations

from collections.abc import Sequence


def by_length(
    lengths: Sequence[int],
    batch_size: int,
    token_budget: int,
    forward_cost: float = float("inf"),
) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), each with at most
    ``batch_size`` rows and ``token_budget`` padded tokens (but at least one row).

    Within those bounds the split minimises padded tokens + ``forward_cost`` per batch (the
    fixed cost of a forward pass, in padded-token equivalents): on a CPU, padding a short row
    to a long one costs as much as real tokens, so rows of very different lengths go to
    separate passes; an infinite cost (the default) makes as few batches as the bounds allow.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths = [max(lengths[i], 1) for i in order]
    n = len(order)
    # best[i]: the cheapest split of the first i rows, as (padded tokens, batches); a batch
    # [j, i) is as wide as its row j (the longest).
    best: list[tuple[float, int] | None] = [(0.0, 0)] + [None] * n
    start = [0] * (n + 1)
    for i in range(1, n + 1):
        for j in range(max(0, i - batch_size), i):
            rows = i - j
            if best[j] is None or (rows > 1 and widths[j] * rows > token_budget):
                continue
            split = (best[j][0] + widths[j] * rows, best[j][1] + 1)
            if best[i] is None or split_cost(split, forward_cost) < split_cost(
                best[i], forward_cost
            ):
                best[i], start[i] = split, j
    batches = []
    i = n
    while i > 0:
        batches.append(order[start[i] : i])
        i = start[i]
    return batches[::-1]


def split_cost(split: tuple[float, int], forward_cost: float) -> tuple[float, float]:
    """A split's (padded tokens, batches) as a comparable cost: padded tokens + its forward
    passes x their cost, or with an infinite cost fewest passes first, then fewest tokens."""
    padded, batches = split
    if forward_cost == float("inf"):
        return (batches, padded)
    return (padded + forward_cost * batches, 0.0)
