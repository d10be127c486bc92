"""Synthetic SFT traces in the format of ``sft_traces_stage1`` / ``sft_traces_stage2`` (one row
per step of a replayed session, chat messages + ids), for tests and benchmarks."""

from __future__ import annotations

import json
import random

import pandas as pd

SYSTEM = (
    "You are a shopper in an online store. Each turn shows your goal, your buyer profile, your "
    "progress so far and the current page. Answer with one JSON object with a short reason."
)
CATEGORIES = ["skirts", "ankle boots", "linen shirts", "rain jackets", "yoga pants", "sneakers"]
ADJECTIVES = ["Ashgrove", "Suede", "Olive", "Classic", "Linen", "Trail", "Harbour", "Velvet"]
ACTIONS = ["search", "view", "add_to_cart", "checkout", "purchase", "end"]


def _page(rng: random.Random, shop: str, products: int) -> str:
    lines = ["Page: search results"]
    for _ in range(products):
        pid = f"{shop}-p{rng.randrange(10_000):04d}"
        name = " ".join(rng.sample(ADJECTIVES, 3))
        lines.append(f"[product] {pid}: {name} {rng.choice(CATEGORIES)}, ${rng.uniform(9, 99):.2f}")
    return "\n".join(lines)


def synthetic_traces(
    sessions: int = 8,
    steps: int = 4,
    stage: int = 1,
    num_tokens: int = 16,
    products_per_page: int = 4,
    validation_share: float = 0.25,
    seed: int = 0,
) -> pd.DataFrame:
    """``sessions`` x ``steps`` examples; ``products_per_page`` sets the length (4: ~150
    tokens, 20: ~420 tokens with SmolLM2's tokenizer)."""
    rng = random.Random(seed * 1000 + stage)
    rows = []
    for s in range(sessions):
        shop = f"shop{rng.randrange(3):02d}"
        token = rng.randrange(num_tokens)
        stratum = rng.choice("ABCD")
        category = rng.choice(CATEGORIES)
        if stage == 1:
            goal = f"You are interested in {category}."
        else:
            goal = f"You are here to {'buy' if stratum != 'D' else 'browse'} {category}."
        split = "validation" if rng.random() < validation_share else "train"
        progress: list[str] = []
        for step in range(steps):
            action = rng.choice(ACTIONS)
            product = f"{shop}-p{rng.randrange(10_000):04d}"
            argument = {
                "search": {"query": category},
                "view": {"product": product},
                "add_to_cart": {"product": product},
            }
            answer = json.dumps(
                {"action": action, **argument.get(action, {}), "reason": "It matches what I want."}
            )
            user = "\n".join(
                [
                    f"Goal: {goal}",
                    f"Buyer profile: <|persona_{token}|>",
                    "Progress:",
                    *[f"{i + 1}. {p}" for i, p in enumerate(progress)],
                    _page(rng, shop, products_per_page),
                ]
            )
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": answer},
                    ],
                    "shop_id": shop,
                    "buyer_id": f"b{s:04d}",
                    "session_id": f"b{s:04d}-s1",
                    "token": token,
                    "persona_token": f"<|persona_{token}|>",
                    "stratum": stratum,
                    "category": category,
                    "step": step,
                    "n_steps": steps,
                    "action": action,
                    "page": "search",
                    "split": split,
                    "stage": stage,
                }
            )
            progress.append(f"{action} {product}")
    return pd.DataFrame(rows)
