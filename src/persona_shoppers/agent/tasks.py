"""The alignment suite's individual tasks (query generation, item selection, rank selection;
PAARS 4.3), asked in the agent's own prompt format: each is one step of the shopping agent.

See docs/alignment.md, "Conditions".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..llm.base import LLM
from ..storefront import EMPTY_CART_LINE, Action, Store
from .prompts import SYSTEM_PROMPT, chat, query_goal, system_prefilled, user_turn
from .rollout import candidate_text, write_queries

Prompt = list[dict[str, str]]


def task_prompt(goal: str, observation: str, profile: str | None) -> Prompt:
    """One agent step with an empty progress log."""
    return chat(SYSTEM_PROMPT, user_turn(goal, observation, [], profile))


def _ask(llm: LLM, prompts: Sequence[Prompt], method: str, *args, **kwargs):
    """``llm.<method>(prompts, ...)`` with the shared system prompt prefilled."""
    with system_prefilled(llm, prompts):
        return getattr(llm, method)(prompts, *args, **kwargs)


def generate_queries(
    llm: LLM,
    stores: dict[str, Store],
    shops: Sequence[str],
    titles: Sequence[str],
    profiles: Sequence[str | None],
    max_tokens: int = 12,
    temperature: float = 0.0,
    seed: int = 0,
    guidance: float = 1.0,
) -> list[str]:
    """The search query each agent types on the home page to find a product, written as the
    simulation writes queries (:func:`.rollout.write_queries`)."""
    prompts = [
        task_prompt(query_goal(t), stores[s].render(stores[s].start()[0]), p)
        for s, t, p in zip(shops, titles, profiles, strict=True)
    ]
    seeds = [int(x) for x in np.random.SeedSequence(seed).generate_state(max(len(prompts), 1))]
    with system_prefilled(llm, prompts):
        return write_queries(llm, prompts, max_tokens, temperature, seeds[: len(prompts)], guidance)


def options_page(store: Store, product_ids: Sequence[str]) -> str:
    """A listing page of the given products (display ids, titles, prices, ratings)."""
    lines = [store.listing_line(p) for p in product_ids]
    return "\n".join([f"[products] {len(lines)} products shown", *lines, EMPTY_CART_LINE])


def select_items(
    llm: LLM,
    stores: dict[str, Store],
    shops: Sequence[str],
    options: Sequence[Sequence[str]],
    profiles: Sequence[str | None],
) -> list[int]:
    """The index of the option each agent puts in its cart (most likely, ties: first)."""
    prompts, candidates = [], []
    for shop, ids, profile in zip(shops, options, profiles, strict=True):
        store = stores[shop]
        goal = "You are here to buy one of these products."
        prompts.append(task_prompt(goal, options_page(store, ids), profile))
        candidates.append([candidate_text(Action("add_to_cart", store.display_id[p])) for p in ids])
    return [c.index for c in _ask(llm, prompts, "choose", candidates)]


def rank_goal(query: str) -> str:
    """The goal of rank selection: the query alone (PAARS gives only the result list)."""
    return f'You searched for "{query}".'


def select_ranks(
    llm: LLM,
    stores: dict[str, Store],
    shops: Sequence[str],
    queries: Sequence[str],
    profiles: Sequence[str | None],
    seed: int = 0,
) -> list[int]:
    """The 1-based rank of the result each agent views on the results page of a query, drawn
    from the softmax of the candidates' log-likelihoods (one seeded draw per case)."""
    prompts, candidates = [], []
    for shop, query, profile in zip(shops, queries, profiles, strict=True):
        store = stores[shop]
        visit, _ = store.start()
        page = store.step(visit, Action("search", query)).observation
        prompts.append(task_prompt(rank_goal(query), page, profile))
        ids = store.search_results(query)
        candidates.append([candidate_text(Action("view", store.display_id[p])) for p in ids])
    choices = _ask(llm, prompts, "choose", candidates)
    rng = np.random.default_rng(seed)
    return [int(rng.choice(len(c.probs), p=c.probs)) + 1 for c in choices]


def goal_claims(llm: LLM, prompts: Sequence[Prompt]) -> list[bool]:
    """Whether the agent says it reached its goal: " yes" against " no" after the question."""
    asked = [
        [*p, {"role": "assistant", "content": "Did I reach my goal? Answer:"}] for p in prompts
    ]
    return [c.index == 0 for c in _ask(llm, asked, "choose", [[" yes", " no"]] * len(asked))]


def conditional_perplexity(llm: LLM, contexts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """exp(- mean token log-likelihood) of each text after its context (PAARS: the human query
    after the viewed product), scored as the assistant's answer to the context."""
    prompts = [[{"role": "user", "content": c}] for c in contexts]
    choices = llm.choose(prompts, [[t] for t in texts], normalize=True)
    return np.exp(-np.array([c.mean_logprobs[0] for c in choices]))
