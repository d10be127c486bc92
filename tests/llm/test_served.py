"""The endpoint backend against a real server: llama.cpp's (llama-cpp-python) on 127.0.0.1,
started from the environment ``python -m persona_shoppers.llm.serving setup`` creates
(scripts/test.sh does, once per machine). Exact ``choose`` over HTTP against the local
backend on the same weights, and served agents in the store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from persona_shoppers.agent.rollout import (
    AgentSpec,
    RolloutEngine,
    _Live,
    action_logprobs,
    candidate_actions,
    choice_texts,
)
from persona_shoppers.llm.endpoint import EndpointLLM
from persona_shoppers.llm.local import LocalLLM
from persona_shoppers.llm.serving import LlamaCppServer
from persona_shoppers.storefront import Action, Store

from ..pipelines.alignment.test_pipeline import run_simulation_and_alignment
from ..storefront.test_store import COLLECTIONS, MEMBERS, PRODUCTS

# Mean total-variation distance between the local and the served agent's action
# distributions on the same prompts: f32 GGUF against float32 weights (the same numbers up to
# kernel order), and the default model's Q4_1 file served by llama.cpp's quantised kernels
# against its float32 dequantisation (docs/models_and_endpoints.md reports the measured value).
TV_BOUND_F32 = 0.002
TV_BOUND_Q4 = 0.05


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LlamaCppServer]:
    models = {"tiny": tiny_model_dir, "smollm2": "smollm2-135m-instruct"}
    with LlamaCppServer(models, threads=2, startup_timeout_s=60) as running:
        yield running


def _served(server: LlamaCppServer, name: str, tokenizer: str | Path) -> EndpointLLM:
    return EndpointLLM(
        server.base_url, name, tokenizer=tokenizer, concurrency=1, timeout_s=120, max_retries=0
    )


@pytest.fixture(scope="module")
def store() -> Store:
    return Store("s1", PRODUCTS, COLLECTIONS, MEMBERS)


def _agent_steps(store: Store, n: int = 6) -> list[tuple[list[dict], list, tuple]]:
    """Agents' prompts on the home page, a product page and the cart: each with its valid
    actions and the texts ``choose`` scores."""
    steps = []
    goals = ["You are here to buy running shoes.", "You are here to browse rain jackets."]
    for i in range(n):
        agent = _Live(AgentSpec(f"a{i}", "s1", goals[i % 2], seed=i), store, datetime(2026, 1, 1))
        product = store.display_id[PRODUCTS["product_id"].iloc[i % len(PRODUCTS)]]
        for action in [Action("view", product), Action("add_to_cart", product)][: i % 3]:
            agent.act(action)
        options = candidate_actions(store, agent.visit)
        steps.append((agent.prompt(max_progress=10), options, choice_texts(options)))
    return steps


def _action_distributions(llm, steps) -> list[np.ndarray]:
    choices = llm.choose([p for p, _, _ in steps], [texts for _, _, (_, texts) in steps])
    return [
        np.exp(action_logprobs(options, types, choice.logprobs))
        for (_, options, (types, _)), choice in zip(steps, choices, strict=True)
    ]


def _mean_tv(first, second) -> float:
    return float(np.mean([0.5 * np.abs(a - b).sum() for a, b in zip(first, second, strict=True)]))


def test_choose_over_http_is_the_local_likelihood_on_f32_weights(server, tiny_model_dir, store):
    steps = _agent_steps(store)
    local = _action_distributions(LocalLLM(tiny_model_dir, dtype="float32"), steps)
    served = _action_distributions(_served(server, "tiny", tiny_model_dir), steps)
    assert _mean_tv(local, served) < TV_BOUND_F32


def test_choose_over_http_on_the_default_models_q4_weights(server, store):
    steps = _agent_steps(store)
    local = _action_distributions(LocalLLM("smollm2-135m-instruct", dtype="float32"), steps)
    served = _action_distributions(_served(server, "smollm2", "smollm2-135m-instruct"), steps)
    assert _mean_tv(local, served) < TV_BOUND_Q4


def test_a_served_agent_finishes_sessions_with_valid_actions(server, tiny_model_dir, store):
    llm = _served(server, "tiny", tiny_model_dir)
    engine = RolloutEngine(llm, {"s1": store}, max_steps=5, temperature=20.0, lockstep=2)
    goal = "You are here to buy running shoes."
    specs = [AgentSpec(f"a{i}", "s1", goal, seed=i) for i in range(3)]
    runs = engine.run(specs, progress=False)
    assert len(runs) == 3
    assert all(run.outcome is not None for run in runs)
    assert not any(run.errors for run in runs)
    assert all(run.outcome != "error" for run in runs)


def test_simulation_and_alignment_run_on_served_models(server, tiny_model_dir):
    """A slice of both pipelines with every condition's model served: the base model as
    ``llm`` and the SFT models by their served names (``llm.endpoint.models``)."""
    served = {kind: "tiny" for kind in ("llm", "sft", "sft_single_stage")}
    endpoint = {"base_url": server.base_url, "models": served, "concurrency": 1, "timeout_s": 120}
    llm = {
        "backend": "endpoint",
        "model": str(tiny_model_dir),
        "cache": False,
        "endpoint": endpoint,
    }
    _, sim, out = run_simulation_and_alignment(tiny_model_dir, llm, case_buyers=4)
    agents = out["simulation_agents"]
    assert len(agents) > 0
    runs = out["instruction_runs"]
    assert len(runs) > 0 and (runs["n_errors"] == 0).all()
    answers = out["individual_task_answers"]
    conditions = set(answers["condition"])
    assert {"base", "persona_token"} <= conditions
    queries = answers["task"] == "query_generation"
    assert answers.loc[queries, "query"].notna().all()
    assert answers.loc[~queries, "choice"].notna().all() and (~queries).any()
    assert out["alignment_report"]


def test_json_answers_follow_the_schema_through_the_servers_grammar(server, tiny_model_dir):
    """The random tiny model writes valid objects only because the server constrains it
    (``response_format``: a JSON-schema grammar), on the first attempt."""
    schema = {
        "type": "object",
        "properties": {"level": {"type": "string", "enum": ["low", "medium", "high"]}},
        "required": ["level"],
    }
    llm = _served(server, "tiny", tiny_model_dir)
    prompt = [{"role": "user", "content": "How price sensitive is this shopper?"}]
    (result,) = llm.generate_json([prompt], schema, max_new_tokens_per_field=8)
    assert result.valid and result.attempts == 1 and llm.json_schema_supported
    assert result.value["level"] in {"low", "medium", "high"}
