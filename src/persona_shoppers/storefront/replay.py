"""Replay a human session in the store, step by step, as the actions an agent would take: one
store action per human event; an event the store rejects is skipped with a reason.

See docs/trace_generation.md, "Replay".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .actions import Action, InvalidAction
from .store import StepResult, Store

_EVENT_ACTIONS = {
    "search": ("search", "query"),
    "product_view": ("view", "product_id"),
    "collection_view": ("open", "collection_id"),
    "add_to_cart": ("add_to_cart", "product_id"),
    "remove_from_cart": ("remove_from_cart", "product_id"),
    "checkout_start": ("checkout", None),
    "purchase": ("purchase", None),
}

_REASONS = {
    "search": "Searching for what I want.",
    "view_listed": "This one on the page looks right; opening it.",
    "view_direct": "Going straight to a product I have in mind.",
    "open": "Browsing this collection.",
    "add_to_cart": "I like it; adding it to the cart.",
    "remove_from_cart": "Changed my mind about this one.",
    "view_cart": "Checking my cart.",
    "checkout": "Ready to check out.",
    "purchase": "Placing the order.",
    "back": "Going back.",
    "end": "That is all for this visit.",
}


@dataclass(frozen=True)
class ReplayedStep:
    """One step: what the shopper saw and knew, and the action taken."""

    observation: str  # the page before the action
    progress: tuple[str, ...]  # the progress log before the action
    action: Action
    reason: str
    page: str  # the kind of that page (home, search, collection, product, cart, checkout)


@dataclass
class SessionReplay:
    """A replayed session: its steps, coverage of the human events, and what was skipped."""

    steps: list[ReplayedStep] = field(default_factory=list)
    n_events: int = 0
    n_replayed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> events
    outcome: str | None = None


def describe(store: Store, action: Action, result: StepResult) -> str:
    """The progress-log entry for one step (what was done, and an error if any)."""
    arg = action.argument
    if action.type == "view" and result.valid:
        product_id = store.resolve_product(arg)
        entry = f"viewed {arg} ({store.title(product_id)}, ${store.price(product_id):.2f})"
    elif action.type == "open" and result.valid:
        entry = f"opened {arg} ({store.collections[store.resolve_collection(arg)]})"
    else:
        entry = {
            "search": f'searched "{arg}"',
            "view": f"viewed {arg}",
            "open": f"opened {arg}",
            "add_to_cart": f"added {arg} to the cart",
            "remove_from_cart": f"removed {arg} from the cart",
            "view_cart": "looked at the cart",
            "checkout": "started checkout",
            "purchase": "purchased",
            "back": "went back",
            "end": "left",
        }[action.type]
    return entry if result.valid else f"{entry} -> error: {result.error}"


def _human_action(store: Store, event: Mapping[str, Any]) -> Action:
    kind, column = _EVENT_ACTIONS[event["event_type"]]
    if column is None:
        return Action(kind)
    value = event.get(column)
    if value is None or value != value:  # None or NaN
        raise InvalidAction(f"{event['event_type']} without {column}", f"missing_{column}")
    if column == "product_id":
        if store.resolve_product(value) is None:
            raise InvalidAction(f"no product {value!r} in this store", "unknown_product")
        return Action(kind, store.display_id[value])
    if column == "collection_id":
        if store.resolve_collection(value) is None:
            raise InvalidAction(f"no collection {value!r} in this store", "unknown_collection")
        return Action(kind, store.collection_display_id[value])
    return Action(kind, str(value).strip()[:80])


def replay_session(store: Store, events: Iterable[Mapping[str, Any]]) -> SessionReplay:
    """Replay one human session (its events in time order) in ``store``."""
    replay = SessionReplay()
    visit, result = store.start()
    observation, progress = result.observation, []
    ordered = list(events)
    replay.n_events = len(ordered)
    purchased: set[str] = set()
    for i, event in enumerate(ordered):
        kind = event["event_type"]
        if kind == "page_view":
            if i == 0:
                replay.n_replayed += 1  # the landing page is the visit's start
            else:
                replay.skipped["page_view: not the landing page"] += 1
            continue
        if kind == "purchase" and event.get("product_id") in purchased:
            replay.n_replayed += 1  # another line of the order just placed
            continue
        if visit.done:
            replay.skipped[f"{kind}: after the purchase"] += 1
            continue
        try:
            action = _human_action(store, event)
        except InvalidAction as err:
            replay.skipped[f"{kind}: {err.rule}"] += 1
            continue
        listed = kind == "product_view" and event["product_id"] in store.listed_products(visit.page)
        key = ("view_listed" if listed else "view_direct") if action.type == "view" else action.type
        step = ReplayedStep(observation, tuple(progress), action, _REASONS[key], visit.page.kind)
        result = store.step(visit, action)
        if not result.valid:
            replay.skipped[f"{kind}: {result.rule}"] += 1
            continue  # the visit is unchanged: the shopper still sees the same page
        replay.steps.append(step)
        replay.n_replayed += 1
        progress.append(describe(store, action, result))
        observation = result.observation
        if action.type == "purchase":
            purchased = {e["product_id"] for e in result.events}
            if event.get("product_id") not in purchased:
                replay.skipped["purchase: product not in the cart"] += 1
                replay.n_replayed -= 1
    if not visit.done:
        end = Action("end")
        replay.steps.append(
            ReplayedStep(observation, tuple(progress), end, _REASONS["end"], visit.page.kind)
        )
        store.step(visit, end)
    replay.outcome = visit.outcome
    return replay


def recheck_trace(store: Store, turns: Iterable[tuple[str, str]]) -> list[str]:
    """Re-execute a recorded trace in ``store``; the problems found (empty when sound).

    ``turns`` are one session's (user message, assistant message) pairs in step order. Each
    user message must end with the page the store shows at that step, and each assistant
    message must be a valid action there.
    """
    problems = []
    visit, result = store.start()
    for step, (user, assistant) in enumerate(turns):
        if visit.done:
            problems.append(f"step {step}: the visit already ended ({visit.outcome})")
            break
        if not user.endswith(result.observation):
            problems.append(f"step {step}: the prompt does not show the store's page")
        result = store.step(visit, assistant)
        if not result.valid:
            problems.append(f"step {step}: invalid action ({result.error})")
    if not visit.done:
        problems.append("the trace does not end the visit")
    return problems
