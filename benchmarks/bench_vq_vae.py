"""Benchmark the persona-token path: VQ-VAE training on the default sample, and token
assignment for 1M buyers (featurise from per-product embeddings, encode, quantise).

    kedro run --pipelines=data_enrichment,feature_engineering   # once, for the inputs
    python benchmarks/bench_vq_vae.py [--buyers 1000000] [--skip-training]

Training runs the vq_vae pipeline's own nodes with the project's parameters and also fits the
k-means baseline, then prints the Table 1 comparison. Assignment tiles the default sample's
buyers (and their sessions) until there are `--buyers` of them, then times the one-pass
featurisation with the persisted `feature_transformer`, the encoder and the codebook lookup.
Target on the reference machine (2 cores): 1M buyers in at most 30 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import yaml

from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
RESULTS = ROOT / "benchmarks" / "results"
TARGET_SECONDS = 30.0


def _tile(
    buyers: pd.DataFrame, sessions: pl.DataFrame, n: int
) -> tuple[pd.DataFrame, pl.DataFrame]:
    """Copies of the sample's buyers (buyer_id suffixed by the copy) until there are n."""
    copies = -(-n // len(buyers))
    tiled_buyers = pd.concat(
        [buyers.assign(buyer_id=buyers["buyer_id"] + f"~{c}") for c in range(copies)],
        ignore_index=True,
    ).iloc[:n]
    tiled_sessions = pl.concat(
        [sessions.with_columns(pl.col("buyer_id") + f"~{c}") for c in range(copies)]
    )
    return tiled_buyers, tiled_sessions


def assign_tokens(n_buyers: int) -> dict[str, float]:
    import pickle

    from persona_shoppers.datasets import LightningModuleDataset
    from persona_shoppers.features.embeddings import buyer_channel_means

    buyers = pd.read_parquet(DATA / "03_primary/buyers.parquet")
    sessions = pl.read_parquet(DATA / "02_intermediate/enriched_sessions.parquet").select(
        "shop_id", "buyer_id", "viewed_product_ids", "carted_product_ids", "purchased_product_ids"
    )
    products = pd.read_parquet(DATA / "04_feature/product_embeddings.parquet")
    with open(DATA / "06_models/feature_transformer.pkl", "rb") as f:
        transformer = pickle.load(f)
    model = LightningModuleDataset(str(DATA / "06_models/vq_vae.pt")).load()
    buyers, sessions = _tile(buyers, sessions, n_buyers)
    timings = {}
    start = time.perf_counter()
    channels = buyer_channel_means(sessions, buyers, products)
    timings["channel_means_s"] = time.perf_counter() - start
    t = time.perf_counter()
    x = transformer.transform(buyers, channels)
    timings["transform_s"] = time.perf_counter() - t
    t = time.perf_counter()
    codes = model.assign(x).numpy()
    timings["encode_quantise_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    timings.update(
        buyers=len(buyers), sessions=len(sessions), distinct_codes=int(len(np.unique(codes)))
    )
    return timings


def train(params_override: dict | None = None) -> dict:
    from persona_shoppers.pipelines.vq_vae import nodes

    features = pd.read_parquet(DATA / "04_feature/buyer_features.parquet")
    params = yaml.safe_load((ROOT / "conf/base/parameters_vq_vae.yml").read_text())["vq_vae"]
    params["trainer"]["enable_progress_bar"] = False
    planted = json.loads((DATA / "01_raw/planted_truth.json").read_text())
    start = time.perf_counter()
    model, history = nodes.train_vq_vae(
        features, params["seed"], params["model"], params["batch_size"], params["trainer"]
    )
    train_s = time.perf_counter() - start
    t = time.perf_counter()
    kmeans = nodes.fit_kmeans(features, params["seed"], params["kmeans"])
    kmeans_s = time.perf_counter() - t
    report, _, _ = nodes.evaluate_codebooks(
        features, model, kmeans, planted, params["metrics"], params["model"]["num_codes"]
    )
    return {
        "vq_vae_train_s": train_s,
        "epochs": params["trainer"]["max_epochs"],
        "train_rows": int((features["split"] == "train").sum()),
        "kmeans_fit_s": kmeans_s,
        "table1": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buyers", type=int, default=1_000_000)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    out: dict = {"machine": machine_facts()}
    if not args.skip_training:
        out["training"] = trained = train()
        print(
            f"VQ-VAE training: {trained['vq_vae_train_s']:.1f} s for {trained['epochs']} epochs on "
            f"{trained['train_rows']:,} buyers; k-means: {trained['kmeans_fit_s']:.1f} s"
        )
        table = pd.DataFrame(trained["table1"]).round(3)
        print(table.to_string())
    out["assignment"] = assigned = assign_tokens(args.buyers)
    print(
        f"token assignment: {assigned['buyers']:,} buyers ({assigned['sessions']:,} sessions) in "
        f"{assigned['total_s']:.1f} s = channel means {assigned['channel_means_s']:.1f}"
        f" + transform {assigned['transform_s']:.1f}"
        f" + encode/quantise {assigned['encode_quantise_s']:.1f}"
    )
    met = assigned["total_s"] <= TARGET_SECONDS if assigned["buyers"] >= 1_000_000 else None
    if met is not None:
        print(f"  {'met ' if met else 'MISSED'} 1M buyers in <= {TARGET_SECONDS:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vq_vae.json").write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
