"""The synthetic_data pipeline: `kedro run --pipeline=synthetic_data` rewrites data/01_raw.

With the default parameters it reproduces the committed sample exactly (the generator is
seeded); raise `buyers_per_shop` for larger sets (about 350 events per 1,000 buyers and shop).
"""

from kedro.pipeline import Pipeline, node

from .nodes import generate_clickstream


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_clickstream,
                inputs="params:synthetic_data",
                outputs=[
                    "raw_events",
                    "raw_products",
                    "raw_collections",
                    "raw_collection_products",
                    "planted_truth",
                ],
                name="generate_clickstream",
            )
        ]
    )
