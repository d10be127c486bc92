"""The feature_engineering pipeline: buyers -> 403-d vectors, fitted transforms, splits."""

from kedro.pipeline import Pipeline, node

from .nodes import build_buyer_features, embed_products, fit_feature_transformer, split_buyers


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                embed_products,
                ["raw_products", "params:feature_engineering"],
                "product_embeddings",
                name="embed_products",
            ),
            node(
                split_buyers,
                ["buyers", "params:feature_engineering"],
                "buyer_splits",
                name="split_buyers",
            ),
            node(
                fit_feature_transformer,
                [
                    "buyers",
                    "buyer_splits",
                    "enriched_sessions",
                    "product_embeddings",
                    "params:feature_engineering",
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
                    "params:feature_engineering",
                ],
                "buyer_features",
                name="build_buyer_features",
            ),
        ]
    )
