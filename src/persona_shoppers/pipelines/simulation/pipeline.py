"""The simulation pipeline: agent populations per evaluation shop, rollouts under persona
conditions, agentic A/B tests."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    build_simulation_agents,
    calibrate_agents_on_policy,
    run_ab_tests,
    simulate_conditions,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_simulation_agents,
                [
                    "shop_persona_distributions",
                    "persona_assignments",
                    "held_out_events",
                    "text_personas",
                    "params:simulation.seed",
                    "params:simulation.populations",
                ],
                "simulation_agents",
                name="build_simulation_agents",
            ),
            node(
                calibrate_agents_on_policy,
                [
                    "sft_action_calibration",
                    "sft_traces_stage2",
                    "sft_model",
                    "storefronts",
                    "params:simulation.rollout",
                    "params:simulation.on_policy_calibration",
                    "params:sft.calibration.max_bias",
                    "params:llm",
                ],
                "agent_action_calibration",
                name="calibrate_agents_on_policy",
            ),
            node(
                simulate_conditions,
                [
                    "simulation_agents",
                    "sft_model",
                    "sft_model_single_stage",
                    "agent_action_calibration",
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
                    "agent_action_calibration",
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
