"""Test cases of the alignment suite, mined from held-out human sessions (PAARS 4.3).

* Query generation: the first search of a session and the first product viewed within
  ``window_s`` seconds after it (the rest of the session is discarded).
* Item selection: a purchased product plus distractors from categories outside the buyer's
  interests (the categories they viewed); all options are later removed from the history the
  agent sees (:func:`redact_history`).
* Rank selection: a human query's result list in the textual store and the rank of the first
  result the human viewed within ``window_s`` seconds.
* Reference pairs: the same query-view pairs from other buyers of the same shops, the humans
  that the noise floors compare with the cases' humans.

Leakage-free: a case buyer's persona is mined from the events before its *test cutoff*
(:func:`persona_cutoffs`), and its cases
come from events at or after it.

Every function is deterministic for its seed and says how many candidates it skipped and why
(``logger``), so a thin test set is never a silent one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import polars as pl

logger = logging.getLogger(__name__)

_KEYS = ["shop_id", "buyer_id"]


CUTOFF = "history_until"  # the column of a buyer's test cutoff


def _keys(buyers: pd.DataFrame) -> pl.DataFrame:
    """(shop_id, buyer_id) of ``buyers`` and, where it has one, their cutoff (UTC)."""
    buyers = buyers.drop_duplicates(_KEYS)
    keys = pl.from_pandas(buyers[_KEYS])
    if CUTOFF not in buyers:
        return keys
    cutoff = pd.to_datetime(buyers[CUTOFF], utc=True).dt.tz_convert(None).to_numpy()
    return keys.with_columns(pl.Series(CUTOFF, cutoff).dt.replace_time_zone("UTC"))


def _of_buyers(events: pl.DataFrame, buyers: pd.DataFrame) -> pl.DataFrame:
    """The buyers' events, only those at or after their cutoff where ``buyers`` has one."""
    mine = events.join(_keys(buyers), on=_KEYS, how="inner")
    if CUTOFF in buyers:
        mine = mine.filter(pl.col("ts") >= pl.col(CUTOFF)).drop(CUTOFF)
    return mine.sort([*_KEYS, "session_id", "ts"])


def persona_cutoffs(events: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """Per buyer of ``events`` with a test event: ``history_until``, the earliest of the
    starts of its last session with a purchase and of its last session whose first search is
    followed by a view within ``window_s`` (so each kind of case it has stays after the
    cutoff), and ``events_before``, how many of its events precede it (a persona needs some)."""
    events = events.sort([*_KEYS, "session_id", "ts"])
    starts = events.group_by([*_KEYS, "session_id"]).agg(pl.col("ts").min().alias(CUTOFF))
    kinds = [
        query_view_pairs(events, window_s).select(*_KEYS, "session_id"),
        events.filter(pl.col("event_type") == "purchase").select(*_KEYS, "session_id").unique(),
    ]
    last = [
        kind.join(starts, on=[*_KEYS, "session_id"]).group_by(_KEYS).agg(pl.col(CUTOFF).max())
        for kind in kinds
    ]
    cutoffs = pl.concat(last).group_by(_KEYS).agg(pl.col(CUTOFF).min())
    before = (
        events.select(*_KEYS, "ts")
        .join(cutoffs, on=_KEYS)
        .group_by(_KEYS)
        .agg((pl.col("ts") < pl.col(CUTOFF)).sum().cast(pl.Int64).alias("events_before"))
    )
    return cutoffs.join(before, on=_KEYS).sort(_KEYS)


def before_cutoff(events: pl.DataFrame, buyers: pd.DataFrame) -> pl.DataFrame:
    """What a persona of ``buyers`` (with ``history_until``) may be mined from: their events
    strictly before their cutoff, without any event on a product they touch at or after it
    and without searches for a query they search at or after it (a test item seen earlier
    stays out too)."""
    mine = events.join(_keys(buyers[[*_KEYS, CUTOFF]]), on=_KEYS, how="inner")
    after = mine.filter(pl.col("ts") >= pl.col(CUTOFF))
    later_products = after.select(*_KEYS, "product_id").drop_nulls().unique()
    later_queries = after.select(*_KEYS, "query").drop_nulls().unique()
    return (
        mine.filter(pl.col("ts") < pl.col(CUTOFF))
        .drop(CUTOFF)
        .join(later_products, on=[*_KEYS, "product_id"], how="anti", nulls_equal=False)
        .join(later_queries, on=[*_KEYS, "query"], how="anti", nulls_equal=False)
    )


def query_view_pairs(events: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """Per session: its first search and the first product viewed within ``window_s`` s after.

    Returns shop_id, buyer_id, session_id, ts (of the search), query, product_id, title,
    category; sessions without a search, or whose first search is not followed by a view in
    the window, have no row."""
    searches = (
        events.filter((pl.col("event_type") == "search") & pl.col("query").is_not_null())
        .group_by([*_KEYS, "session_id"], maintain_order=True)
        .agg(pl.col("ts").first(), pl.col("query").first())
    )
    views = events.filter(pl.col("event_type") == "product_view").select(
        "session_id", pl.col("ts").alias("view_ts"), "product_id", "title", "category"
    )
    return (
        searches.join(views, on="session_id")
        .filter(
            (pl.col("view_ts") >= pl.col("ts"))
            & ((pl.col("view_ts") - pl.col("ts")).dt.total_seconds() <= window_s)
        )
        .sort([*_KEYS, "session_id", "view_ts"])
        .group_by([*_KEYS, "session_id"], maintain_order=True)
        .first()
        .drop("view_ts")
    )


def query_generation_cases(
    events: pl.DataFrame, buyers: pd.DataFrame, window_s: float = 60, max_per_buyer: int = 1
) -> pd.DataFrame:
    """<query, viewed product> pairs of the given buyers, their earliest sessions first."""
    pairs = query_view_pairs(_of_buyers(events, buyers), window_s)
    cases = pairs.sort([*_KEYS, "ts"]).group_by(_KEYS, maintain_order=True).head(max_per_buyer)
    logger.info(
        "query generation: %d cases from %d of %d buyers (first search + a view within %gs)",
        cases.height,
        cases.select(_KEYS).unique().height,
        len(buyers),
        window_s,
    )
    return cases.drop("ts").to_pandas()


def item_selection_cases(
    events: pl.DataFrame,
    products: pd.DataFrame,
    buyers: pd.DataFrame,
    n_distractors: int = 3,
    max_per_buyer: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """A purchased product and ``n_distractors`` products of categories the buyer never viewed
    (in the whole log; the purchase at or after the buyer's cutoff where ``buyers`` has one).

    Options are shuffled (seeded); ``answer`` is the purchased product's index. Columns:
    shop_id, buyer_id, product_ids, titles, categories, answer."""
    seen = (
        events.join(_keys(buyers[_KEYS]), on=_KEYS, how="semi")
        .filter(pl.col("category").is_not_null())
        .group_by(_KEYS)
        .agg(pl.col("category").unique().alias("seen"))
    )
    bought = (
        _of_buyers(events, buyers)
        .filter(pl.col("event_type") == "purchase")
        .unique([*_KEYS, "product_id"], keep="first", maintain_order=True)
        .group_by(_KEYS, maintain_order=True)
        .head(max_per_buyer)
        .join(seen, on=_KEYS, maintain_order="left")  # the seeded draws go by this order
    )
    catalog = {shop: group for shop, group in products.groupby("shop_id")}
    rows, skipped = [], 0
    for i, case in enumerate(bought.iter_rows(named=True)):
        shop = catalog[case["shop_id"]]
        pool = shop[~shop["category"].isin(case["seen"])]
        if len(pool) < n_distractors:
            skipped += 1
            continue
        rng = np.random.default_rng([seed, i])
        picks = pool.iloc[rng.choice(len(pool), n_distractors, replace=False)]
        ids = [case["product_id"], *picks["product_id"]]
        order = rng.permutation(len(ids))
        chosen = shop.set_index("product_id").loc[[ids[j] for j in order]]
        rows.append(
            {
                "shop_id": case["shop_id"],
                "buyer_id": case["buyer_id"],
                "product_ids": chosen.index.tolist(),
                "titles": chosen["title"].tolist(),
                "categories": chosen["category"].tolist(),
                "answer": int(np.flatnonzero(order == 0)[0]),
            }
        )
    logger.info(
        "item selection: %d cases (%d purchases skipped: fewer than %d products outside the "
        "buyer's viewed categories)",
        len(rows),
        skipped,
        n_distractors,
    )
    return pd.DataFrame(rows, columns=[*_KEYS, "product_ids", "titles", "categories", "answer"])


def rank_selection_cases(
    events: pl.DataFrame,
    buyers: pd.DataFrame,
    search_results: Mapping[str, callable],
    window_s: float = 60,
    max_per_buyer: int = 1,
) -> pd.DataFrame:
    """A human query's result list (``search_results[shop](query)`` -> product ids) and the
    1-based rank of the product the human viewed next; pairs whose product is not on the list
    are skipped and counted. Columns: shop_id, buyer_id, session_id, query, product_id,
    results, rank."""
    pairs = query_view_pairs(_of_buyers(events, buyers), window_s).to_pandas()
    rows, missed = [], 0
    for pair in pairs.to_dict("records"):
        if sum(r["buyer_id"] == pair["buyer_id"] for r in rows) >= max_per_buyer:
            continue
        results = list(search_results[pair["shop_id"]](pair["query"]))
        if pair["product_id"] not in results:
            missed += 1
            continue
        rows.append({**pair, "results": results, "rank": results.index(pair["product_id"]) + 1})
    logger.info(
        "rank selection: %d cases (%d query-view pairs skipped: the viewed product is not on "
        "the store's first result page for the query)",
        len(rows),
        missed,
    )
    columns = [*_KEYS, "session_id", "query", "product_id", "results", "rank"]
    return pd.DataFrame(rows, columns=columns)


def reference_pairs(
    events: pl.DataFrame,
    case_buyers: pd.DataFrame,
    search_results: Mapping[str, callable],
    window_s: float = 60,
) -> pd.DataFrame:
    """One query-view pair per buyer of the cases' shops who is not a case buyer, with the
    rank of the viewed product on the store's result page for the query (null when it is not
    on it). Columns: shop_id, buyer_id, query, title, rank."""
    shops = sorted(case_buyers["shop_id"].unique())
    mine = events.filter(pl.col("shop_id").is_in(shops))
    keys = pl.from_pandas(case_buyers[_KEYS].drop_duplicates())
    others = mine.join(keys, on=_KEYS, how="anti").sort([*_KEYS, "session_id", "ts"])
    pairs = (
        query_view_pairs(others, window_s)
        .sort([*_KEYS, "ts"])
        .group_by(_KEYS, maintain_order=True)
        .first()
        .to_pandas()
    )
    ranks = []
    for pair in pairs.to_dict("records"):
        results = list(search_results[pair["shop_id"]](pair["query"]))
        on_page = pair["product_id"] in results
        ranks.append(results.index(pair["product_id"]) + 1 if on_page else None)
    pairs["rank"] = pd.array(ranks, dtype="Int64")
    logger.info(
        "reference pairs: %d other buyers' query-view pairs (%d with the product on the page)",
        len(pairs),
        int(pairs["rank"].notna().sum()),
    )
    return pairs[[*_KEYS, "query", "title", "rank"]]


def redact_history(history: str, phrases: Iterable[str]) -> str:
    """The history without any ``; ``-separated entry that mentions one of ``phrases``
    (case-insensitive), and without lines left empty: what the agent may see of a buyer whose
    test items are ``phrases`` (PAARS: no contamination)."""
    patterns = [re.escape(p.lower()) for p in phrases if p]
    if not patterns:
        return history
    mention = re.compile("|".join(patterns))
    lines = []
    for line in history.splitlines():
        date, sep, body = line.partition(": ")
        entries = body.split("; ") if sep else [line]
        kept = [e for e in entries if not mention.search(e.lower())]
        if kept:
            lines.append(f"{date}{sep}{'; '.join(kept)}" if sep else kept[0])
    return "\n".join(lines)
