"""Benchmark text-persona mining: personas per minute with the configured LLM, and what
the personas are worth (spread of values, faithfulness to behaviour and to planted types).

    kedro run --pipelines=data_enrichment,feature_engineering,vq_vae   # once, for the inputs
    python benchmarks/bench_persona_mining.py [--buyers 120] [--method likelihood|paars]
        [--calibration batch|content_free|none] [--few-shot 3]
    python benchmarks/bench_persona_mining.py --evidence-ceiling    # no LLM


Samples held-out buyers, builds their leakage-free inputs and the few-shot examples exactly as
the persona_mining pipeline does (conf/base parameters, overridden by the flags), then mines
with the LLM of conf/base/parameters_llm.yml and the response cache OFF, so every persona
costs real model calls. Writes benchmarks/results/persona_mining_<method>.json.

``--evidence-ceiling`` runs no model: over every eligible held-out buyer, how well the levels
the evidence implies (before the cutoff, and over the whole log) rank the planted types, and
the median rho of that ranking over random samples of 120 to 960 buyers: what a persona that
copied its evidence would reach. Writes benchmarks/results/persona_evidence_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
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
    parser.add_argument("--buyers", type=int, default=None)
    parser.add_argument("--method", default=None)
    parser.add_argument("--calibration", default=None)
    parser.add_argument("--few-shot", type=int, default=None)
    parser.add_argument("--evidence-ceiling", action="store_true")
    args = parser.parse_args()

    from persona_shoppers.datasets import LightningModuleDataset
    from persona_shoppers.features.layout import feature_matrix
    from persona_shoppers.llm import build_llm
    from persona_shoppers.pipelines.persona_mining import nodes

    conf = ROOT / "conf/base"
    text = yaml.safe_load((conf / "parameters_persona_mining.yml").read_text())["persona_mining"][
        "text_personas"
    ]
    for key, value in (
        ("n_buyers", args.buyers),
        ("method", args.method),
        ("calibration", args.calibration),
        ("few_shot", args.few_shot),
    ):
        if value is not None:
            text[key] = value
    window_s = yaml.safe_load((conf / "parameters_alignment.yml").read_text())["alignment"][
        "cases"
    ]["window_s"]
    enrichment = yaml.safe_load((conf / "parameters_data_enrichment.yml").read_text())[
        "data_enrichment"
    ]
    history = enrichment["history"]
    llm_params = yaml.safe_load((conf / "parameters_llm.yml").read_text())["llm"]
    llm_params["cache"] = False
    features = pd.read_parquet(DATA / "04_feature/buyer_features.parquet")
    assignments = features[["shop_id", "buyer_id", "shop_role", "split", "stratum"]].copy()
    vq_vae = LightningModuleDataset(str(DATA / "06_models/vq_vae.pt")).load()
    assignments["token"] = vq_vae.assign(feature_matrix(features))
    events = pl.read_parquet(DATA / "02_intermediate/enriched_events.parquet")
    products = pd.read_parquet(DATA / "01_raw/products.parquet")
    planted_path = DATA / "01_raw/planted_truth.json"
    planted = json.loads(planted_path.read_text()) if planted_path.exists() else {}
    if args.evidence_ceiling:
        evidence_ceiling(assignments, events, products, planted, window_s)
        return
    buyers = nodes.sample_persona_buyers(
        assignments, events, text["n_buyers"], text["seed"], window_s
    )
    inputs = nodes.build_persona_inputs(buyers, events, products, history, text["history_chars"])
    with open(DATA / "06_models/feature_transformer.pkl", "rb") as handle:
        transformer = pickle.load(handle)
    tokens = nodes.tokenise_persona_buyers(
        buyers,
        events,
        pd.read_parquet(DATA / "04_feature/product_embeddings.parquet"),
        transformer,
        vq_vae,
        enrichment["intent_weights"],
    )
    examples = nodes.select_persona_examples(assignments, events, products, history, text)

    llm = build_llm(llm_params)  # the instance mine_personas reuses
    dtype = resolve_dtype(llm_params.get("dtype", "auto"))
    # load the model before timing
    llm.generate([[{"role": "user", "content": "Hello"}]], max_new_tokens=2)
    start = time.perf_counter()
    personas = nodes.mine_personas(inputs, tokens, examples, products, text, llm_params)
    seconds = time.perf_counter() - start
    report, _, _ = nodes.evaluate_text_personas(
        personas, inputs, events, products, planted, text["seed"], text["permutation_draws"]
    )
    result = {
        "buyers": len(personas),
        "seconds": seconds,
        "personas_per_minute": 60 * len(personas) / seconds,
        "text_personas": text,
        "llm": {k: llm_params[k] for k in ("backend", "model", "dtype", "batch_size")},
        "machine": machine_facts(dtype=dtype),
        "quality": report,
    }
    print(
        f"{len(personas)} text personas ({text['method']}) in {seconds:.1f} s = "
        f"{result['personas_per_minute']:.1f} personas/minute ({llm_params['model']}, {dtype},"
        f" batch {llm_params['batch_size']})"
    )
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"persona_mining_{text['method']}.json").write_text(json.dumps(result, indent=2))


def evidence_ceiling(
    assignments: pd.DataFrame,
    events: pl.DataFrame,
    products: pd.DataFrame,
    planted: dict,
    window_s: float,
    draws: int = 300,
) -> None:
    """Planted-type ranking of the evidence's implied price sensitivity (see module doc)."""
    import numpy as np

    from persona_shoppers.alignment.cases import before_cutoff
    from persona_shoppers.personas.evidence import buyer_evidence, implied_levels, shop_ranks
    from persona_shoppers.personas.faithfulness import planted_agreement
    from persona_shoppers.pipelines.persona_mining import nodes
    from persona_shoppers.synthetic.generator import planted_buyer_types

    keys = ["shop_id", "buyer_id"]
    eligible = nodes.sample_persona_buyers(assignments, events, len(assignments), 0, window_s)
    shop_events = events.filter(pl.col("shop_id").is_in(sorted(eligible["shop_id"].unique())))
    reference = buyer_evidence(shop_events, products)
    sensitivity = {t["name"]: float(t["price_sensitivity"]) for t in planted["buyer_types"]}
    types = planted_buyer_types(planted)
    scopes = {
        "before_cutoff": before_cutoff(events, eligible),
        "whole_log": events.join(pl.from_pandas(eligible[keys]), on=keys, how="semi"),
    }
    result: dict = {"buyers": len(eligible)}
    rng = np.random.default_rng(0)
    for scope, scoped in scopes.items():
        ranked = shop_ranks(buyer_evidence(scoped, products), reference).merge(types, on=keys)
        stated = [implied_levels(r)["price_sensitivity"] for r in ranked.to_dict("records")]
        kind = ranked["buyer_type"].tolist()
        result[scope] = {
            "all": planted_agreement(stated, kind, sensitivity, min_buyers=3)["spearman_rho"]
        }
        for n in (120, 240, 480, 960):
            rhos = []
            for _ in range(draws):
                rows = rng.choice(len(ranked), n, replace=False)
                rho = planted_agreement(
                    [stated[i] for i in rows], [kind[i] for i in rows], sensitivity, 3
                ).get("spearman_rho", np.nan)
                rhos.append(rho)
            rhos = np.array(rhos, dtype=float)
            result[scope][str(n)] = {
                "median_rho": float(np.nanmedian(rhos)),
                "share_at_least_0.6": float(np.nanmean(rhos >= 0.6)),
            }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "persona_evidence_ceiling.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
