"""Benchmark agents on a served model against the local lockstep engine, same agents and steps.

    python benchmarks/bench_served.py [--agents 16] [--max-steps 8] [--concurrency 1 8 32]
                                      [--shop shop03] [--dtype auto] [--no-cxx]
                                      [--upstream-texts 4]

The same agents (an evaluation shop of the default sample, goals over its categories, no
persona, greedy decoding) shop on the default model (SmolLM2-135M-Instruct):

- ``local``: the lockstep engine in this process (``--agents`` agents per batched call, KV
  caches across steps), on the float32 dequantisation of the model's Q4_1 file (or bf16
  where ``--dtype auto`` picks it);
- ``served``: the same engine over HTTP (``backend: endpoint``, exact ``choose`` from prompt
  log-probabilities) against llama.cpp serving the Q4_1 file itself (:mod:`persona_shoppers.
  llm.llama_server`), with ``--concurrency`` requests in flight;
- agreement: the served model scores every state the local agents saw; mean total-variation
  distance between the two action distributions and the share of states with the same best
  action;
- ``llama-cpp-python``'s own server: seconds per exactly scored candidate, a few texts of
  one state, against the lean server;
- llama.cpp's C++ ``llama-server`` (``--parallel`` slots, continuous batching), which has no
  prompt log-probabilities: generation only, the agents' query prompts at each concurrency,
  against the lean server and the local batched ``generate``.

Reports sessions per minute, agent steps per second, prompt tokens per second (the tokens of
every step's prompt, whatever an engine reuses) and generated tokens per second. Writes
``benchmarks/results/served.json``. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from bench_simulation import RESULTS, shop_agents

from persona_shoppers.agent.rollout import RolloutEngine, action_logprobs
from persona_shoppers.llm import build_llm
from persona_shoppers.llm.endpoint import EndpointLLM
from persona_shoppers.llm.serving import (
    LlamaCppServer,
    cxx_server,
    free_port,
    model_file,
    wait_until_ready,
)
from persona_shoppers.numerics import machine_facts, resolve_dtype

QUERY_TOKENS = 16


def _recording(engine: RolloutEngine, states: list) -> RolloutEngine:
    """``engine``, recording every step's (prompt, valid actions, scored texts)."""
    decide = engine._decide

    def recorded(agents, prompts, options, texts):
        states.extend(zip(prompts, options, texts, strict=True))
        return decide(agents, prompts, options, texts)

    engine._decide = recorded
    return engine


def _rollout(llm, stores, specs, args) -> tuple[dict, list, list]:
    states: list = []
    engine = _recording(
        RolloutEngine(llm, stores, args.max_steps, decoding="greedy", lockstep=args.agents),
        states,
    )
    started = time.perf_counter()
    runs = engine.run(specs, progress=False)
    seconds = time.perf_counter() - started
    steps = sum(len(r.actions) for r in runs)
    return (
        {
            "seconds": round(seconds, 2),
            "sessions_per_minute": round(len(runs) / seconds * 60, 2),
            "agent_steps_per_second": round(steps / seconds, 3),
            "agent_steps": steps,
        },
        [(r.actions, r.outcome) for r in runs],
        states,
    )


def _distributions(llm, states) -> list[np.ndarray]:
    choices = llm.choose([p for p, _, _ in states], [texts for _, _, (_, texts) in states])
    return [
        np.exp(action_logprobs(options, types, c.logprobs))
        for (_, options, (types, _)), c in zip(states, choices, strict=True)
    ]


def _generation(post, prompts: list, concurrency: int) -> dict:
    """Generated tokens per second for ``prompts`` answered ``concurrency`` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        tokens = sum(pool.map(post, prompts))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "generated_tokens_per_second": round(tokens / seconds, 1)}


def _chat_tokens(endpoint: EndpointLLM):
    def post(prompt) -> int:
        answer = endpoint.post(
            "/chat/completions",
            {
                "model": endpoint.model,
                "messages": prompt,
                "max_tokens": QUERY_TOKENS,
                "temperature": 0.0,
            },
        )
        return int(answer["usage"]["completion_tokens"])

    return post


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shop", default="shop03")
    parser.add_argument(
        "--upstream-texts",
        type=int,
        default=4,
        help="texts of one state scored on each server for the seconds per candidate",
    )
    parser.add_argument("--no-cxx", action="store_true", help="skip the C++ llama-server")
    args = parser.parse_args()

    stores, specs = shop_agents(args.shop, args.agents)
    local = build_llm(
        {"model": args.model, "dtype": args.dtype, "batch_size": args.agents, "cache": False}
    )
    report: dict = {"agents": args.agents, "max_steps": args.max_steps, "model": args.model}
    report["local"], local_sessions, states = _rollout(local, stores, specs, args)
    tokens = sum(len(local.encode(local.render(p))) for p, _, _ in states)
    report["prompt_tokens"] = tokens
    report["local"]["prompt_tokens_per_second"] = round(tokens / report["local"]["seconds"], 1)
    print("local:", report["local"], flush=True)

    def served(server: LlamaCppServer, concurrency: int) -> EndpointLLM:
        return EndpointLLM(
            server.base_url, "model", tokenizer=args.model, concurrency=concurrency, timeout_s=600
        )

    query_prompts = [p for p, _, _ in states][: max(args.concurrency)]
    with LlamaCppServer({"model": args.model}, threads=None) as server:
        report["served"] = {}
        for concurrency in args.concurrency:
            result, sessions, _ = _rollout(served(server, concurrency), stores, specs, args)
            result["prompt_tokens_per_second"] = round(tokens / result["seconds"], 1)
            result["sessions_as_local"] = sum(
                a == b for a, b in zip(sessions, local_sessions, strict=True)
            )
            report["served"][concurrency] = result
            print(f"served, concurrency {concurrency}:", result, flush=True)
        mine, theirs = _distributions(local, states), _distributions(served(server, 1), states)
        tv = [0.5 * np.abs(a - b).sum() for a, b in zip(mine, theirs, strict=True)]
        report["agreement"] = {
            "states": len(states),
            "mean_total_variation": round(float(np.mean(tv)), 4),
            "max_total_variation": round(float(np.max(tv)), 4),
            "same_best_action": round(
                float(
                    np.mean([a.argmax() == b.argmax() for a, b in zip(mine, theirs, strict=True)])
                ),
                4,
            ),
        }
        print("agreement:", report["agreement"], flush=True)
        probe = states[-1][0], states[-1][2][1][: args.upstream_texts]
        lean_candidate = _seconds_per_candidate(served(server, 1), *probe)
        report["generation"] = {"lean_server": {}}
        for concurrency in args.concurrency:
            result = _generation(
                _chat_tokens(served(server, concurrency)), query_prompts, concurrency
            )
            report["generation"]["lean_server"][concurrency] = result
    with LlamaCppServer({"model": args.model}, engine="llama-cpp-python") as upstream:
        upstream_candidate = _seconds_per_candidate(served(upstream, 1), *probe)
    report["seconds_per_scored_candidate"] = {
        "lean_server": round(lean_candidate, 4),
        "llama_cpp_python_server": round(upstream_candidate, 4),
    }
    print("seconds per scored candidate:", report["seconds_per_scored_candidate"], flush=True)

    started = time.perf_counter()
    answers = local.generate(query_prompts, max_new_tokens=QUERY_TOKENS)
    generated = sum(len(local.encode(a)) for a in answers)
    report["generation"]["local_batched"] = {
        "prompts": len(query_prompts),
        "generated_tokens_per_second": round(generated / (time.perf_counter() - started), 1),
    }
    if not args.no_cxx:
        report["generation"]["cxx_llama_server"] = _cxx_generation(args, query_prompts)
    print("generation:", report["generation"], flush=True)
    report["machine"] = machine_facts(dtype=resolve_dtype(args.dtype))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "served.json").write_text(json.dumps(report, indent=2))


def _seconds_per_candidate(endpoint: EndpointLLM, prompt: list, texts: list) -> float:
    """Wall seconds per exactly scored candidate, ``texts`` after ``prompt`` (its first
    candidate runs the whole prompt, as a new agent step does)."""
    started = time.perf_counter()
    endpoint.choose([prompt], [texts])
    return (time.perf_counter() - started) / len(texts)


def _cxx_generation(args, prompts: list) -> dict:
    """The C++ llama-server with one slot per request in flight, at each concurrency."""
    out = {}
    for concurrency in args.concurrency:
        port = free_port()
        process = subprocess.Popen(
            [str(cxx_server()), "-m", str(model_file(args.model)), "--port", str(port)]
            + ["--parallel", str(concurrency), "-c", str(2048 * concurrency), "--cont-batching"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            wait_until_ready(base_url + "/models", process, timeout_s=120)
            endpoint = EndpointLLM(base_url, "model", choose_method="index", timeout_s=600)
            out[concurrency] = _generation(_chat_tokens(endpoint), prompts, concurrency)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return out


if __name__ == "__main__":
    main()
