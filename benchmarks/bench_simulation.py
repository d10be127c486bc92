"""Benchmark the rollout engine: agents in lockstep against one agent at a time.

    python benchmarks/bench_simulation.py [--agents 32] [--max-steps 8] [--lockstep 32]
                                          [--dtype auto] [--model smollm2-135m-instruct]

The same agents (an evaluation shop of the default sample, goals over its categories, no
persona) shop with greedy decoding three ways, on the same model and dtype:

- ``lockstep``: the engine as the simulation pipeline runs it: ``--lockstep`` agents per
  batched LLM call, each agent's prompt prefix kept in the KV cache across its steps;
- ``one_at_a_time``: the same engine with one agent per call (``lockstep=1``), still with
  the KV cache across steps: what batching alone adds;
- ``plain_loop``: one agent at a time with no prompt cache (``prefix_cache_mb: 0``), every
  step's prompt run whole: the agent loop without the engine.

Reports sessions per minute, agent steps per second, the speed-ups and whether all three
produced the same sessions. Writes ``benchmarks/results/simulation.json``. Run it on a quiet
machine: other jobs on the same cores change the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from persona_shoppers.agent.population import category_leaf
from persona_shoppers.agent.prompts import intent_goal
from persona_shoppers.agent.rollout import AgentSpec, RolloutEngine
from persona_shoppers.llm import build_llm
from persona_shoppers.numerics import machine_facts, resolve_dtype
from persona_shoppers.storefront import build_stores

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RAW = ROOT / "data" / "01_raw"


def agent_specs(products: pd.DataFrame, shop: str, n: int) -> list[AgentSpec]:
    categories = sorted({category_leaf(c) for c in products["category"]})
    return [
        AgentSpec(f"a{i}", shop, intent_goal(categories[i % len(categories)], "AD"[i % 2]), None, i)
        for i in range(n)
    ]


def shop_agents(shop: str, n: int) -> tuple[dict, list[AgentSpec]]:
    """The store of ``shop`` in the default sample, and ``n`` agents with goals over its
    categories."""
    products = pd.read_parquet(RAW / "products.parquet")
    stores = build_stores(
        products,
        pd.read_parquet(RAW / "collections.parquet"),
        pd.read_parquet(RAW / "collection_products.parquet"),
        shops=[shop],
    )
    return stores, agent_specs(products[products["shop_id"] == shop], shop, n)


def _time(engine: RolloutEngine, specs: list[AgentSpec]) -> tuple[float, list]:
    started = time.perf_counter()
    runs = engine.run(specs, progress=False)
    return time.perf_counter() - started, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--lockstep", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shop", default="shop03")
    args = parser.parse_args()

    stores, specs = shop_agents(args.shop, args.agents)

    def llm(prefix_cache_mb: int):
        config = {
            "model": args.model,
            "dtype": args.dtype,
            "batch_size": args.lockstep,
            "cache": False,
            "prefix_cache_mb": prefix_cache_mb,
        }
        return build_llm(config)

    results = {}
    sessions = {}
    modes = (("lockstep", args.lockstep, 4096), ("one_at_a_time", 1, 4096), ("plain_loop", 1, 0))
    for name, lockstep, cache_mb in modes:
        engine = RolloutEngine(
            llm(cache_mb), stores, args.max_steps, decoding="greedy", lockstep=lockstep
        )
        seconds, runs = _time(engine, specs)
        steps = sum(len(r.actions) for r in runs)
        sessions[name] = [(r.actions, r.outcome) for r in runs]
        results[name] = {
            "lockstep": lockstep,
            "prefix_cache_mb": cache_mb,
            "seconds": round(seconds, 2),
            "sessions_per_minute": round(len(runs) / seconds * 60, 2),
            "agent_steps_per_second": round(steps / seconds, 3),
            "agent_steps": steps,
        }
        print(f"{name:>14}: {results[name]}", flush=True)
    speedups = {
        f"over_{name}": round(results[name]["seconds"] / results["lockstep"]["seconds"], 2)
        for name in ("one_at_a_time", "plain_loop")
    }
    same = {
        name: sum(a == b for a, b in zip(sessions["lockstep"], sessions[name], strict=True))
        for name in ("one_at_a_time", "plain_loop")
    }
    report = {
        "agents": args.agents,
        "max_steps": args.max_steps,
        "model": args.model,
        "dtype": args.dtype,
        "shop": args.shop,
        "results": results,
        "speedup": speedups,
        "identical_sessions": {name: f"{n}/{args.agents}" for name, n in same.items()},
        "machine": machine_facts(dtype=resolve_dtype(args.dtype)),
    }
    for name, n in same.items():
        print(
            f"lockstep over {name}: {speedups['over_' + name]:.2f}x; "
            f"identical sessions {n}/{args.agents}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "simulation.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
