"""The sft pipeline: two-stage persona-token fine-tuning (Lightning) and the single-stage
ablation."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    add_persona_tokens_to_model,
    evaluate_sft,
    train_single_stage,
    train_stage1,
    train_stage2,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                add_persona_tokens_to_model,
                ["vq_vae_model", "params:sft", "params:llm"],
                "sft_initial_model",
                name="add_persona_tokens",
            ),
            node(
                train_stage1,
                ["sft_initial_model", "sft_traces_stage1", "params:sft"],
                ["sft_model_stage1", "sft_stage1_history"],
                name="train_sft_stage1",
            ),
            node(
                train_stage2,
                ["sft_model_stage1", "sft_traces_stage2", "params:sft"],
                ["sft_model", "sft_stage2_history"],
                name="train_sft_stage2",
            ),
            node(
                train_single_stage,
                ["sft_initial_model", "sft_traces_stage1", "sft_traces_stage2", "params:sft"],
                ["sft_model_single_stage", "sft_single_stage_history"],
                name="train_sft_single_stage",
            ),
            node(
                evaluate_sft,
                [
                    "sft_traces_stage2",
                    "sft_model",
                    "sft_model_single_stage",
                    "params:sft",
                    "params:llm",
                ],
                ["sft_evaluation", "sft_evaluation_mlflow_metrics"],
                name="evaluate_sft",
            ),
        ]
    )
