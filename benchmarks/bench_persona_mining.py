"""Benchmark PAARS text-persona mining: personas per minute with the configured LLM.

    kedro run --pipelines=data_enrichment,feature_engineering,vq_vae   # once, for the inputs
    python benchmarks/bench_persona_mining.py [--buyers 24]

Samples held-out buyers exactly as the persona_mining pipeline does, then runs the two PAARS
prompts with the LLM of conf/base/parameters_llm.yml and the response cache OFF, so every
persona costs real model calls. Reports personas per minute, the schema-valid rate, and the
faithfulness agreements against the shuffled baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import polars as pl
import yaml

from persona_shoppers.numerics import machine_facts, resolve_dtype

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buyers", type=int, default=24)
    args = parser.parse_args()

    from persona_shoppers.datasets import LightningModuleDataset
    from persona_shoppers.features.layout import feature_matrix
    from persona_shoppers.llm import build_llm
    from persona_shoppers.pipelines.persona_mining import nodes

    params = yaml.safe_load((ROOT / "conf/base/parameters_persona_mining.yml").read_text())[
        "persona_mining"
    ]
    params["text_personas"]["n_buyers"] = args.buyers
    llm_params = yaml.safe_load((ROOT / "conf/base/parameters_llm.yml").read_text())["llm"]
    llm_params["cache"] = False
    features = pd.read_parquet(DATA / "04_feature/buyer_features.parquet")
    assignments = features[["shop_id", "buyer_id", "shop_role", "split", "stratum"]].copy()
    assignments["token"] = (
        LightningModuleDataset(str(DATA / "06_models/vq_vae.pt"))
        .load()
        .assign(feature_matrix(features))
    )
    histories = pd.read_parquet(DATA / "03_primary/buyer_histories.parquet")
    products = pd.read_parquet(DATA / "01_raw/products.parquet")
    sample = params["text_personas"]
    buyers = nodes.sample_persona_buyers(assignments, histories, sample["n_buyers"], sample["seed"])

    llm = build_llm(llm_params)  # the instance mine_personas reuses
    dtype = resolve_dtype(llm_params.get("dtype", "auto"))
    # load the model before timing
    llm.generate([[{"role": "user", "content": "Hello"}]], max_new_tokens=2)
    start = time.perf_counter()
    personas = nodes.mine_personas(buyers, products, sample["history_chars"], llm_params)
    seconds = time.perf_counter() - start
    sessions = pl.read_parquet(DATA / "02_intermediate/enriched_sessions.parquet")
    report, _ = nodes.evaluate_text_personas(personas, sessions, products, sample["seed"])
    result = {
        "buyers": len(personas),
        "seconds": seconds,
        "personas_per_minute": 60 * len(personas) / seconds,
        "llm": {k: llm_params[k] for k in ("backend", "model", "dtype", "batch_size")},
        "machine": machine_facts(dtype=dtype),
        "quality": report,
    }
    print(
        f"{len(personas)} text personas in {seconds:.1f} s = {result['personas_per_minute']:.1f} "
        f"personas/minute ({llm_params['model']}, {dtype},"
        f" batch {llm_params['batch_size']})"
    )
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "persona_mining.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
