"""Benchmark the local LLM backend (default model, CPU): generation, choose, JSON, perplexity.

    python benchmarks/bench_llm.py [--dtypes bfloat16 float32] [--batches 1 8 32]
                                   [--new-tokens 64] [--model smollm2-135m-instruct]

- greedy generation: exactly ``--new-tokens`` tokens per prompt (end-of-turn ignored), prompts
  of ~40 tokens, tokens/s = batch x new tokens / wall time;
- choose: 8 prompts x 10 candidates (product categories), candidates/s;
- generate_json: a PAARS-style profile schema (a free-text reasoning field, enums, an integer,
  an enum array), objects/s;
- perplexity: 32 short texts, texts/s.

Each measurement is repeated ``--repeats`` times alternating the dtypes, and the best time is
kept (the machine may be shared with other jobs). Prints a table and writes
``benchmarks/results/llm.json``. The response cache is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from persona_shoppers.llm.local import LocalLLM
from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

PRODUCTS = [
    "trail running shoes",
    "a linen summer dress",
    "a leather handbag",
    "wireless earbuds",
    "a wool winter coat",
    "kids rain boots",
    "a stainless steel water bottle",
    "yoga pants",
]
CATEGORIES = [
    "Shoes",
    "Dresses",
    "Bags",
    "Electronics",
    "Coats",
    "Kids",
    "Kitchen",
    "Sportswear",
    "Accessories",
    "Beauty",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 200},
        "age_range": {"type": "string", "enum": ["18-24", "25-34", "35-44", "45-54", "55+"]},
        "income": {"type": "string", "enum": ["low", "medium", "high"]},
        "visits_per_month": {"type": "integer", "minimum": 0, "maximum": 60},
        "price_sensitive": {"type": "boolean"},
        "interests": {
            "type": "array",
            "items": {"type": "string", "enum": CATEGORIES},
            "maxItems": 3,
        },
    },
    "required": [
        "reasoning",
        "age_range",
        "income",
        "visits_per_month",
        "price_sensitive",
        "interests",
    ],
}


def _prompt(i: int) -> list[dict[str, str]]:
    item = PRODUCTS[i % len(PRODUCTS)]
    return [
        {"role": "system", "content": "You are a shopper in an online store."},
        {
            "role": "user",
            "content": f"Shopper {i} viewed {item} twice and added it to the cart. "
            "Describe what they will do next.",
        },
    ]


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench(
    model: str, dtypes: list[str], batches: list[int], new_tokens: int, repeats: int
) -> list[dict]:
    """Every measurement is repeated ``repeats`` times, alternating the dtypes, and the best
    time is kept: on a shared machine this compares the dtypes under the same load."""
    llms = {dtype: LocalLLM(model, dtype=dtype, batch_size=max(batches)) for dtype in dtypes}
    for llm in llms.values():
        llm.generate([_prompt(0)], max_new_tokens=4)  # warm-up
    prompts = [_prompt(i) for i in range(8)]
    texts = [f"{PRODUCTS[i % 8]} for {CATEGORIES[i % 10].lower()} lovers" for i in range(32)]
    tasks = []  # (task, batch, items, unit, fn(llm))
    for batch in batches:
        tasks.append(
            (
                "generate",
                batch,
                batch * new_tokens,
                "tokens/s",
                lambda llm, b=batch: llm.generate_texts(
                    [llm.render(_prompt(i)) for i in range(b)], new_tokens, ignore_eos=True
                ),
            )
        )
    tasks.append(
        (
            "choose",
            len(prompts),
            len(prompts) * len(CATEGORIES),
            "candidates/s",
            lambda llm: llm.choose(prompts, [CATEGORIES] * len(prompts)),
        )
    )
    tasks.append(
        (
            "generate_json",
            len(prompts),
            len(prompts),
            "objects/s",
            lambda llm: llm.generate_json(prompts, SCHEMA, max_new_tokens_per_field=48),
        )
    )
    tasks.append(
        ("perplexity", len(texts), len(texts), "texts/s", lambda llm: llm.perplexity(texts))
    )
    rows = []
    for task, batch, items, unit, fn in tasks:
        best = {dtype: float("inf") for dtype in dtypes}
        for _ in range(repeats if task != "generate_json" else 1):
            for dtype in dtypes:
                best[dtype] = min(best[dtype], _timed(lambda d=dtype, f=fn: f(llms[d])))
        for dtype in dtypes:
            rows.append(
                {
                    "dtype": dtype,
                    "task": task,
                    "batch": batch,
                    "seconds": best[dtype],
                    "throughput": items / best[dtype],
                    "unit": unit,
                }
            )
            print(f"{dtype:<10} {task:<14} {batch:>5} {best[dtype]:>8.2f}", flush=True)
    rows.sort(key=lambda r: (dtypes.index(r["dtype"]), r["task"] != "generate"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "llm.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = bench(args.model, args.dtypes, args.batches, args.new_tokens, args.repeats)
    print(f"\n{'dtype':<10} {'task':<14} {'batch':>5} {'seconds':>8} {'throughput':>11}  unit")
    for r in rows:
        print(
            f"{r['dtype']:<10} {r['task']:<14} {r['batch']:>5} {r['seconds']:>8.2f} "
            f"{r['throughput']:>11.1f}  {r['unit']}"
        )
    report = {
        "model": args.model,
        "new_tokens": args.new_tokens,
        "machine": machine_facts(dtypes=args.dtypes),
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
