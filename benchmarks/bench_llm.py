"""Benchmark the local LLM backend (default model, CPU): generation, choose, JSON, perplexity.

    python benchmarks/bench_llm.py [--dtypes bfloat16 float32] [--batches 1 8 32]
                                   [--new-tokens 64] [--model smollm2-135m-instruct]

- greedy generation: exactly ``--new-tokens`` tokens per prompt (end-of-turn ignored), prompts
  of ~40 tokens, tokens/s = batch x new tokens / wall time;
- choose: 8 prompts x 10 candidates (product categories), candidates/s;
- generate_json: a PAARS-style profile schema (a free-text reasoning field, enums, an integer,
  an enum array), objects/s;
- perplexity: 32 short texts, texts/s.

The best of ``--repeats`` runs is kept (the machine may be shared). Prints a table and writes
``benchmarks/results/llm.json``. The response cache is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from persona_shoppers.llm.local import LocalLLM

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


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench(model: str, dtype: str, batches: list[int], new_tokens: int, repeats: int) -> list[dict]:
    rows = []
    llm = LocalLLM(model, dtype=dtype, batch_size=max(batches))
    llm.generate([_prompt(0)], max_new_tokens=4)  # warm-up
    for batch in batches:
        prefixes = [llm.render(_prompt(i)) for i in range(batch)]
        seconds = _best(
            lambda p=prefixes: llm.generate_texts(p, new_tokens, ignore_eos=True), repeats
        )
        rows.append(
            {
                "dtype": dtype,
                "task": "generate",
                "batch": batch,
                "seconds": seconds,
                "throughput": batch * new_tokens / seconds,
                "unit": "tokens/s",
            }
        )
    prompts = [_prompt(i) for i in range(8)]
    candidates = [CATEGORIES] * len(prompts)
    seconds = _best(lambda: llm.choose(prompts, candidates), repeats)
    rows.append(
        {
            "dtype": dtype,
            "task": "choose",
            "batch": len(prompts),
            "seconds": seconds,
            "throughput": len(prompts) * len(CATEGORIES) / seconds,
            "unit": "candidates/s",
        }
    )
    seconds = _best(lambda: llm.generate_json(prompts, SCHEMA, max_new_tokens_per_field=48), 1)
    rows.append(
        {
            "dtype": dtype,
            "task": "generate_json",
            "batch": len(prompts),
            "seconds": seconds,
            "throughput": len(prompts) / seconds,
            "unit": "objects/s",
        }
    )
    texts = [f"{PRODUCTS[i % 8]} for {CATEGORIES[i % 10].lower()} lovers" for i in range(32)]
    seconds = _best(lambda: llm.perplexity(texts), repeats)
    rows.append(
        {
            "dtype": dtype,
            "task": "perplexity",
            "batch": len(texts),
            "seconds": seconds,
            "throughput": len(texts) / seconds,
            "unit": "texts/s",
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "llm.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = []
    for dtype in args.dtypes:
        rows.extend(bench(args.model, dtype, args.batches, args.new_tokens, args.repeats))
    print(f"\n{'dtype':<10} {'task':<14} {'batch':>5} {'seconds':>8} {'throughput':>11}  unit")
    for r in rows:
        print(
            f"{r['dtype']:<10} {r['task']:<14} {r['batch']:>5} {r['seconds']:>8.2f} "
            f"{r['throughput']:>11.1f}  {r['unit']}"
        )
    report = {
        "model": args.model,
        "new_tokens": args.new_tokens,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
