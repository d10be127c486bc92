"""Persona-conditioned shopping agents rolled out in the textual store, many in lockstep: each
step scores the page's valid actions in one batched ``choose`` call (action type, then
argument) and writes search queries in one batched ``generate`` call.

See docs/simulation.md, "The agent" and "The rollout engine".
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..llm.base import LLM
from ..storefront import Action, Page, Store
from ..storefront.actions import MAX_QUERY_CHARS
from ..storefront.replay import describe
from .calibration import TypeBias, bias_vector, calibration_context, context_bias
from .prompts import GOAL_PREFIX, SYSTEM_PROMPT, chat, goal_intent, user_turn, without_goal

logger = logging.getLogger(__name__)

OUTCOMES = ("ended", "purchased", "step_limit", "error")
SEARCH_PREFIX = '{"action": "search", "query": "'


@dataclass(frozen=True)
class AgentSpec:
    """Who shops where: the goal, the profile (persona token, text persona or None), a seed.

    ``metadata["store"]``, when set, names the engine's store to use instead of ``shop_id``
    (e.g. one store per A/B arm of the same shop)."""

    agent_id: str
    shop_id: str
    goal: str
    profile: str | None = None
    seed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentRun:
    """One agent's visit: the actions it took, the events they logged, how it ended."""

    spec: AgentSpec
    actions: list[str] = field(default_factory=list)  # the JSON of each action, in order
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    errors: list[str] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)  # the progress log the agent was shown
    observation: str = ""  # the last page it saw

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.spec.agent_id,
            "actions": self.actions,
            "events": self.events,
            "outcome": self.outcome,
            "errors": self.errors,
            "progress": self.progress,
            "observation": self.observation,
        }


def candidate_actions(store: Store, visit) -> list[Action]:
    """The non-search actions an agent may take on the visit's current page (search is always
    valid): every valid action, with views limited to products shown on a page of the visit
    (this one's listing first, then earlier ones: going back to a product seen before, as
    shoppers do; ids never shown would be guesses). Collections open from every page, as
    buyers open them from product and cart pages too: the home page that every visit starts
    on lists them."""
    page = visit.page
    out: list[Action] = [Action("open", store.collection_display_id[c]) for c in store.collections]
    shown = [p for past in (page, *visit.history[-2::-1]) for p in store.listed_products(past)]
    here = page.subject if page.kind == "product" else None
    out += [Action("view", store.display_id[p]) for p in dict.fromkeys(shown) if p != here]
    if page.kind == "product":
        out.append(Action("add_to_cart", store.display_id[page.subject]))
    if page.kind == "cart":
        out += [Action("remove_from_cart", store.display_id[p]) for p in visit.cart]
    if visit.cart and page.kind != "checkout":
        out.append(Action("checkout"))
    if page.kind == "checkout":
        out.append(Action("purchase"))
    if page.kind != "cart":
        out.append(Action("view_cart"))
    if len(visit.history) > 1:
        out.append(Action("back"))
    out.append(Action("end"))
    return out


def type_text(action_type: str) -> str:
    """The start of the assistant's JSON that fixes only the action type, up to the comma the
    training answers have after it: ``{"action": "view",``."""
    return f'{{"action": "{action_type}",'


def choice_texts(options: Sequence[Action]) -> tuple[list[str], list[str]]:
    """(action types, texts to score) of a step whose valid actions are search and
    ``options``: every type's start (search first), then the complete actions of the types
    with more than one valid argument."""
    types = ["search", *dict.fromkeys(o.type for o in options)]
    counts = Counter(o.type for o in options)
    texts = [type_text(t) for t in types]
    texts += [candidate_text(o) for o in options if counts[o.type] > 1]
    return types, texts


def action_logprobs(
    options: Sequence[Action],
    types: Sequence[str],
    logprobs: Sequence[float],
    type_bias: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Log-probabilities of search and of each of ``options`` (in that order) from the
    log-likelihoods of :func:`choice_texts`'s texts: log P(type | valid types) plus
    log P(argument | type, valid arguments). ``type_bias``: log-biases added to the types
    (the context's calibration, :mod:`.calibration`)."""
    values = np.asarray(logprobs, dtype=float).copy()
    values[: len(types)] += bias_vector(type_bias, types)
    by_type = dict(zip(types, _log_softmax(values[: len(types)]), strict=True))
    counts = Counter(o.type for o in options)
    arguments: dict[str, list[float]] = {}
    for option, full in zip(
        [o for o in options if counts[o.type] > 1], values[len(types) :], strict=True
    ):
        arguments.setdefault(option.type, []).append(full)
    within = {t: iter(_log_softmax(np.asarray(v))) for t, v in arguments.items()}
    return np.asarray(
        [by_type["search"]]
        + [by_type[o.type] + (next(within[o.type]) if o.type in within else 0.0) for o in options]
    )


def _log_softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def candidate_text(action: Action) -> str:
    """The start of the assistant's JSON that fixes the action: up to its argument's end and
    the comma before ``"reason"``, as in the training answers. Cutting at the closing quote
    instead would score a token the model never saw there: tokenizers merge ``",`` into one
    token, so a bare ``"`` is unlikely and every such candidate would lose to the search
    prefix."""
    return action.to_json()[:-1] + ","


class _Live:
    """An agent during its rollout."""

    def __init__(self, spec: AgentSpec, store: Store, started: datetime):
        self.spec, self.store = spec, store
        self.run = AgentRun(spec)
        self.visit, first = store.start()
        self.observation = first.observation
        self.progress = self.run.progress
        self.started = started
        self.intent = goal_intent(spec.goal)
        # prompt prefixes kept in the LLM's cache, up to the progress log and up to the page:
        # of its own prompt ("prompt") and of its query contrast prompt (goal replaced,
        # "contrast", kept from its last search)
        self.cached_prefixes: dict[str, tuple[str, ...]] = {}
        self._log(first.events)

    def _log(self, events: Iterable[dict[str, Any]]) -> None:
        ts = self.started + timedelta(seconds=len(self.run.actions) * 20)
        self.run.events.extend({**e, "step": len(self.run.actions), "ts": ts} for e in events)

    def prompt(self, max_progress: int) -> list[dict[str, str]]:
        user = user_turn(
            self.spec.goal, self.observation, self.progress, self.spec.profile, max_progress
        )
        return chat(SYSTEM_PROMPT, user)

    def act(self, action: Action | str) -> None:
        text = action.to_json() if isinstance(action, Action) else action
        result = self.store.step(self.visit, action)
        self.run.actions.append(text)
        if not result.valid:
            self.run.errors.append(result.error)
            self.run.outcome = "error"
            return
        self._log(result.events)
        self.progress.append(describe(self.store, Action.parse(text), result))
        self.observation = self.run.observation = result.observation
        if self.visit.done:
            self.run.outcome = self.visit.outcome


class RolloutEngine:
    """Rolls out agents in a set of stores with one LLM, many agents per LLM call.

    Args:
        llm: any :class:`~persona_shoppers.llm.base.LLM` (local model or endpoint).
        stores: shop id -> :class:`Store` (control or a variant).
        max_steps: actions per visit before it ends as ``step_limit`` (30 by default).
        decoding: ``sample`` (seeded per agent, ``temperature``) or ``greedy``.
        query_temperature: the sampling temperature of search queries (None: ``temperature``);
            a small model writes usable queries only well below 1.
        query_guidance: classifier-free guidance of search queries towards the goal
            (:func:`write_queries`; 1: none).
        lockstep: agents per LLM call; 1 runs one agent at a time (the reference behaviour).
        max_query_tokens: tokens a search query may take.
        max_progress: progress-log entries in the prompt.
        type_bias: per context (kind of page and cart state), log-biases of the action types
            (the SFT model's calibration, :func:`.calibration.fit_type_bias`; None: the
            model's own).
        start_time: the first event's timestamp (events are 20 s apart).
        record_types: keep, for every step, its context and the model's own (unbiased)
            probability of each valid action type in :attr:`type_records` (what
            :mod:`.on_policy` refits the calibration on).
    """

    def __init__(
        self,
        llm: LLM,
        stores: dict[str, Store],
        max_steps: int = 30,
        decoding: str = "sample",
        temperature: float = 1.0,
        query_temperature: float | None = None,
        query_guidance: float = 1.0,
        lockstep: int = 64,
        max_query_tokens: int = 12,
        max_progress: int = 8,
        type_bias: TypeBias | None = None,
        start_time: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        record_types: bool = False,
    ):
        if decoding not in ("sample", "greedy"):
            raise ValueError(f"decoding must be 'sample' or 'greedy', got {decoding!r}")
        if max_steps < 1 or lockstep < 1:
            raise ValueError("max_steps and lockstep must be >= 1")
        self.llm, self.stores = llm, stores
        self.max_steps, self.decoding, self.temperature = max_steps, decoding, temperature
        self.query_temperature = temperature if query_temperature is None else query_temperature
        self.query_guidance = query_guidance
        self.lockstep, self.max_query_tokens, self.max_progress = (
            lockstep,
            max_query_tokens,
            max_progress,
        )
        self.type_bias = type_bias or {}
        self.start_time = start_time
        self.record_types = record_types
        self.type_records: list[tuple[str, dict[str, float]]] = []

    def run(
        self,
        specs: Sequence[AgentSpec],
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> list[AgentRun]:
        """Roll out every agent; with ``checkpoint`` (a json-lines file) finished agents are
        appended as they end and skipped when the run is resumed."""
        unknown = sorted({_store_key(s) for s in specs} - set(self.stores))
        if unknown:
            raise ValueError(f"RolloutEngine.run: no store for shops {unknown}")
        if len({s.agent_id for s in specs}) != len(specs):
            raise ValueError("RolloutEngine.run: agent ids must be unique")
        done = _read_checkpoint(checkpoint, specs)
        todo = [s for s in specs if s.agent_id not in done]
        bar = tqdm(
            total=len(specs), initial=len(done), desc="agents", unit="agent", disable=not progress
        )
        for finished in self._roll(todo):
            done[finished.spec.agent_id] = finished
            _append_checkpoint(checkpoint, finished)
            bar.update(1)
        bar.close()
        return [done[s.agent_id] for s in specs]

    def _roll(self, specs: Sequence[AgentSpec]) -> Iterable[AgentRun]:
        """Step up to ``lockstep`` agents together; an agent that ends frees its place for the
        next waiting one at once (continuous batching), so a few long visits do not hold up
        the rest of the population."""
        waiting = iter(specs)
        active: list[_Live] = []
        while True:
            for spec in itertools.islice(waiting, self.lockstep - len(active)):
                active.append(_Live(spec, self.stores[_store_key(spec)], self.start_time))
            if not active:
                return
            self._step(active)
            still = []
            for agent in active:
                if agent.run.outcome is None and len(agent.run.actions) >= self.max_steps:
                    agent.run.outcome = "step_limit"
                if agent.run.outcome is None:
                    still.append(agent)
                else:
                    if agent.cached_prefixes:
                        self.llm.release([p for k in agent.cached_prefixes.values() for p in k])
                    yield agent.run
            active = still

    def _step(self, agents: list[_Live]) -> None:
        prompts = [a.prompt(self.max_progress) for a in agents]
        options = [candidate_actions(a.store, a.visit) for a in agents]
        texts = [choice_texts(opts) for opts in options]
        if not hasattr(self.llm, "prefill"):  # an endpoint: the server caches prefixes itself
            self._decide(agents, prompts, options, texts)
            return
        # A local model keeps KV caches: the system prompt for everyone; each agent's prompt
        # up to its progress log (goal and profile: never recomputed) and up to its page
        # (while the log only grows, a step runs just its new entry); and the whole prompt
        # for the step (scoring the actions and writing a query share one pass). A guided
        # query's contrast prompt keeps its prefixes the same way from search to search.
        rendered = [self.llm.render(p) for p in prompts]
        heads = [r[: r.index(GOAL_PREFIX)] for r in rendered]
        self._keep_prefixes(agents, rendered, "prompt", extra=[*heads, *rendered])
        try:
            self._decide(agents, prompts, options, texts)
        finally:
            self.llm.release(rendered)

    def _keep_prefixes(
        self, agents: list[_Live], rendered: list[str], kind: str, extra: Sequence[str] = ()
    ) -> None:
        """Prefill each rendered prompt's prefixes up to its progress log and up to its page
        (with ``extra``), keep them as the agent's ``kind`` of cached prefixes and release the
        ones they replace: as the log only grows, the next step runs just its new entry."""
        kept = [
            (r[: r.index("\nProgress:\n") + 1], r[: r.index("\nPage:\n") + 1]) for r in rendered
        ]
        self.llm.prefill([*extra, *(p for pair in kept for p in pair)])
        for agent, prefixes in zip(agents, kept, strict=True):
            old = agent.cached_prefixes.get(kind, ())
            self.llm.release([p for p in old if p not in prefixes])
            agent.cached_prefixes[kind] = prefixes

    def _decide(self, agents, prompts, options, texts) -> None:
        choices = self.llm.choose(prompts, [scored for _, scored in texts])
        if self.record_types:
            for agent, (types, _), choice in zip(agents, texts, choices, strict=True):
                own = np.exp(_log_softmax(np.asarray(choice.logprobs[: len(types)], dtype=float)))
                self.type_records.append(
                    (_context(agent), dict(zip(types, own.tolist(), strict=True)))
                )
        logprobs = [
            action_logprobs(opts, types, c.logprobs, context_bias(self.type_bias, _context(a)))
            for a, opts, (types, _), c in zip(agents, options, texts, choices, strict=True)
        ]
        picks = [self._pick(a, lp) for a, lp in zip(agents, logprobs, strict=True)]
        searching = [i for i, k in enumerate(picks) if k == 0]
        queries = {}
        if searching:
            if self.query_guidance != 1.0 and hasattr(self.llm, "prefill"):
                self._keep_prefixes(
                    [agents[i] for i in searching],
                    [self.llm.render(without_goal(prompts[i])) for i in searching],
                    "contrast",
                )
            temperature = 0.0 if self.decoding == "greedy" else self.query_temperature
            answers = write_queries(
                self.llm,
                [prompts[i] for i in searching],
                self.max_query_tokens,
                temperature,
                [_step_seed(agents[i]) for i in searching],
                self.query_guidance,
            )
            queries = dict(zip(searching, answers, strict=True))
        for i, agent in enumerate(agents):
            query = queries.get(i, "")
            if picks[i] == 0 and query and not _reloads(agent.visit.page, query):
                agent.act(json.dumps({"action": "search", "query": query}, ensure_ascii=False))
                continue
            if picks[i] == 0:  # no new search: the best of the other actions
                picks[i] = 1 + self._pick(agent, logprobs[i][1:])
            agent.act(options[i][picks[i] - 1])

    def _pick(self, agent: _Live, logprobs: list[float]) -> int:
        values = np.asarray(logprobs, dtype=float)
        if self.decoding == "greedy":
            return int(np.argmax(values))
        weights = np.exp((values - values.max()) / self.temperature)
        rng = np.random.default_rng(_step_seed(agent))
        return int(rng.choice(len(values), p=weights / weights.sum()))


def write_queries(
    llm: LLM,
    prompts: Sequence[list[dict[str, str]]],
    max_tokens: int,
    temperature: float,
    seeds: Sequence[int],
    guidance: float = 1.0,
) -> list[str]:
    """The search query an agent writes on each prompt: its answer is started as a search
    (:data:`SEARCH_PREFIX`) and the model writes up to the closing quote; the query is cut to
    fit the store ("" when the model writes none). ``guidance`` > 1 steers the words towards
    the goal: guided by the same prompt with a content-free goal (:func:`.prompts.without_goal`),
    the words the model would write whatever the goal lose weight (docs/simulation.md,
    "Queries")."""
    started = [[*p, {"role": "assistant", "content": SEARCH_PREFIX}] for p in prompts]
    contrast = [without_goal(p) for p in started] if guidance != 1.0 else None
    answers = llm.generate(
        started, max_tokens, temperature, ['"'], list(seeds), contrast=contrast, guidance=guidance
    )
    return [_fit_query(a) for a in answers]


def _fit_query(text: str) -> str:
    """A written query as the store takes it: stripped and cut to ``MAX_QUERY_CHARS`` at a
    word boundary where there is one (a small model's 12 tokens can exceed it)."""
    query = text.strip()
    if len(query) <= MAX_QUERY_CHARS:
        return query
    cut = query[:MAX_QUERY_CHARS]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).strip()


def _reloads(page: Page, query: str) -> bool:
    """Whether searching ``query`` would only reload the results page the agent is on: no new
    search (buyers repeat their previous query in 2% of searches, a small model copying it
    from its prompt in most; docs/simulation.md, "The agent")."""
    return page.kind == "search" and page.subject == query


def _context(agent: _Live) -> str:
    return calibration_context(agent.visit.page.kind, not agent.visit.cart, agent.intent)


def _store_key(spec: AgentSpec) -> str:
    return spec.metadata.get("store", spec.shop_id)


def _step_seed(agent: _Live) -> int:
    return int(
        np.random.SeedSequence([agent.spec.seed, len(agent.run.actions)]).generate_state(1)[0]
    )


def _read_checkpoint(path: str | Path | None, specs: Sequence[AgentSpec]) -> dict[str, AgentRun]:
    if path is None or not Path(path).exists():
        return {}
    by_id = {s.agent_id: s for s in specs}
    done = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row["agent_id"] in by_id:
            events = [{**e, "ts": datetime.fromisoformat(e["ts"])} for e in row["events"]]
            done[row["agent_id"]] = AgentRun(
                by_id[row["agent_id"]],
                row["actions"],
                events,
                row["outcome"],
                row["errors"],
                row.get("progress", []),
                row.get("observation", ""),
            )
    logger.info("resuming: %d of %d agents already rolled out in %s", len(done), len(specs), path)
    return done


def _append_checkpoint(path: str | Path | None, run: AgentRun) -> None:
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(run.to_dict(), default=str) + "\n")
