"""The feature_engineering pipeline: buyers -> 403-d vectors, fitted transforms, splits."""

from kedro.pipeline import Pipeline, node

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG

from .nodes import (
    build_buyer_features,
    embed_products,
    fit_feature_transformer,
    select_held_out_events,
    split_buyers,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                embed_products,
                [
                    "raw_products",
                    "params:feature_engineering.embedding_model",
                    "params:feature_engineering.embedding_cache_dir",
                    "params:feature_engineering.embedding_batch_size",
                ],
                "product_embeddings",
                name="embed_products",
            ),
            node(
                split_buyers,
                [
                    "buyers",
                    "params:feature_engineering.eval_shops",
                    "params:feature_engineering.n_eval_shops",
                    "params:feature_engineering.sampling",
                    "params:feature_engineering.seed",
                ],
                "buyer_splits",
                name="split_buyers",
            ),
            node(
                select_held_out_events,
                ["enriched_events", "buyer_splits"],
                "held_out_events",
                name="select_held_out_events",
                # filters the log where it is (Spark, buckets), collects the rows
                tags=[EVENT_SCALE_TAG],
            ),
            node(
                fit_feature_transformer,
                [
                    "buyers",
                    "buyer_splits",
                    "enriched_sessions",
                    "product_embeddings",
                    "params:feature_engineering.embedding_pca_dim",
                    "params:feature_engineering.laplace_alpha",
                    "params:feature_engineering.laplace_beta",
                    "params:feature_engineering.logit_eps",
                    "params:feature_engineering.seed",
                ],
                "feature_transformer",
                name="fit_feature_transformer",
            ),
            node(
                build_buyer_features,
                [
                    "buyers",
                    "buyer_splits",
                    "enriched_sessions",
                    "product_embeddings",
                    "feature_transformer",
                    "params:feature_engineering.positives",
                ],
                "buyer_features",
                name="build_buyer_features",
            ),
        ]
    )
