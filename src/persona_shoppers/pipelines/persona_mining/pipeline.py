"""The persona_mining pipeline: SimPersona persona tokens and their meaning."""

from kedro.pipeline import Pipeline, node

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG

from .nodes import (
    assign_persona_tokens,
    build_persona_cards,
    build_persona_inputs,
    build_shop_distributions,
    evaluate_population_recovery,
    evaluate_text_personas,
    mine_personas,
    sample_persona_buyers,
    select_persona_examples,
    tokenise_persona_buyers,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                assign_persona_tokens,
                ["buyer_features", "vq_vae_model"],
                "persona_assignments",
                name="assign_persona_tokens",
            ),
            node(
                build_shop_distributions,
                ["persona_assignments", "vq_vae_model"],
                "shop_persona_distributions",
                name="build_shop_distributions",
            ),
            node(
                build_persona_cards,
                [
                    "persona_assignments",
                    "buyers",
                    "buyer_features",
                    "enriched_sessions",
                    "raw_products",
                    "vq_vae_model",
                    "params:persona_mining.top_categories",
                ],
                ["persona_cards", "persona_cards_markdown"],
                name="build_persona_cards",
            ),
            node(
                evaluate_population_recovery,
                [
                    "persona_assignments",
                    "buyers",
                    "buyer_features",
                    "vq_vae_model",
                    "params:persona_mining.js_threshold",
                ],
                [
                    "population_recovery",
                    "population_recovery_mlflow_metrics",
                    "population_recovery_plots",
                ],
                name="evaluate_population_recovery",
            ),
            node(
                sample_persona_buyers,
                [
                    "persona_assignments",
                    "held_out_events",
                    "params:persona_mining.text_personas.n_buyers",
                    "params:persona_mining.text_personas.seed",
                    "params:alignment.cases.window_s",
                ],
                "persona_buyers",
                name="sample_persona_buyers",
            ),
            node(
                build_persona_inputs,
                [
                    "persona_buyers",
                    "held_out_events",
                    "raw_products",
                    "params:data_enrichment.history",
                    "params:persona_mining.text_personas.history_chars",
                ],
                "persona_inputs",
                name="build_persona_inputs",
            ),
            node(
                tokenise_persona_buyers,
                [
                    "persona_buyers",
                    "held_out_events",
                    "product_embeddings",
                    "feature_transformer",
                    "vq_vae_model",
                    "params:data_enrichment.intent_weights",
                ],
                "persona_buyer_tokens",
                name="tokenise_persona_buyers",
            ),
            node(
                select_persona_examples,
                [
                    "persona_assignments",
                    "enriched_events",
                    "raw_products",
                    "params:data_enrichment.history",
                    "params:persona_mining.text_personas",
                ],
                "persona_examples",
                name="select_persona_examples",
                tags=[EVENT_SCALE_TAG],  # reads the training shops of its candidates only
            ),
            node(
                mine_personas,
                [
                    "persona_inputs",
                    "persona_buyer_tokens",
                    "persona_examples",
                    "raw_products",
                    "params:persona_mining.text_personas",
                    "params:llm",
                ],
                "text_personas",
                name="mine_text_personas",
            ),
            node(
                evaluate_text_personas,
                [
                    "text_personas",
                    "persona_inputs",
                    "held_out_events",
                    "raw_products",
                    "planted_truth",
                    "params:persona_mining.text_personas.seed",
                    "params:persona_mining.text_personas.permutation_draws",
                ],
                [
                    "text_persona_metrics",
                    "text_persona_mlflow_metrics",
                    "text_persona_plots",
                ],
                name="evaluate_text_personas",
            ),
        ]
    )
