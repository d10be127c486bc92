"""The simulation pipeline: agent populations per evaluation shop, rollouts under persona
conditions, agentic A/B tests."""

from kedro.pipeline import Pipeline, node

from .nodes import build_simulation_agents, run_ab_tests, simulate_conditions

_STORE = ["raw_products", "raw_collections", "raw_collection_products"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_simulation_agents,
                [
                    "shop_persona_distributions",
                    "persona_assignments",
                    "enriched_events",
                    "text_personas",
                    "params:simulation",
                ],
                "simulation_agents",
                name="build_simulation_agents",
            ),
            node(
                simulate_conditions,
                [
                    "simulation_agents",
                    "sft_model",
                    "sft_model_single_stage",
                    *_STORE,
                    "params:simulation",
                    "params:llm",
                ],
                ["simulated_sessions", "simulation_outcomes", "simulation_mlflow_metrics"],
                name="simulate_conditions",
            ),
            node(
                run_ab_tests,
                [
                    "simulation_agents",
                    "sft_model",
                    *_STORE,
                    "planted_truth",
                    "params:simulation",
                    "params:llm",
                ],
                ["ab_test_results", "ab_test_sessions"],
                name="run_ab_tests",
            ),
        ]
    )
