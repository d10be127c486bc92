"""The simulation pipeline: agent populations per evaluation shop, rollouts under persona
conditions, agentic A/B tests."""

from kedro.pipeline import Pipeline, node

from .nodes import build_simulation_agents, run_ab_tests, simulate_conditions


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
                    "params:simulation.seed",
                    "params:simulation.populations",
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
                    "sft_action_calibration",
                    "storefronts",
                    "raw_products",
                    "raw_collections",
                    "params:simulation.conditions",
                    "params:simulation.rollout",
                    "params:simulation.llm_cache",
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
                    "sft_action_calibration",
                    "storefronts",
                    "raw_products",
                    "raw_collections",
                    "planted_truth",
                    "params:simulation.ab_tests",
                    "params:simulation.conditions",
                    "params:simulation.rollout",
                    "params:simulation.llm_cache",
                    "params:simulation.reference_effects",
                    "params:llm",
                ],
                ["ab_test_results", "ab_test_sessions"],
                name="run_ab_tests",
            ),
        ]
    )
