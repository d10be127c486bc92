"""The persona_mining pipeline: SimPersona persona tokens and their meaning."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    assign_persona_tokens,
    build_persona_cards,
    build_shop_distributions,
    evaluate_population_recovery,
    evaluate_text_personas,
    mine_personas,
    sample_persona_buyers,
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
                    "buyer_histories",
                    "params:persona_mining.text_personas.n_buyers",
                    "params:persona_mining.text_personas.seed",
                ],
                "persona_buyers",
                name="sample_persona_buyers",
            ),
            node(
                mine_personas,
                [
                    "persona_buyers",
                    "raw_products",
                    "params:persona_mining.text_personas.history_chars",
                    "params:llm",
                ],
                "text_personas",
                name="mine_text_personas",
            ),
            node(
                evaluate_text_personas,
                [
                    "text_personas",
                    "enriched_sessions",
                    "raw_products",
                    "params:persona_mining.text_personas.seed",
                ],
                ["text_persona_metrics", "text_persona_mlflow_metrics"],
                name="evaluate_text_personas",
            ),
        ]
    )
