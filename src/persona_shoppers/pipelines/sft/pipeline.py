"""The sft pipeline: two-stage persona-token fine-tuning (Lightning) and the single-stage
ablation."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    TRAINING_SETTINGS,
    add_persona_tokens_to_model,
    calibrate_sft_agent,
    evaluate_sft,
    train_single_stage,
    train_stage1,
    train_stage2,
)

_TRAINING = {name: f"params:sft.{name}" for name in TRAINING_SETTINGS}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                add_persona_tokens_to_model,
                [
                    "vq_vae_model",
                    "params:sft.model",
                    "params:sft.hf_cache_dir",
                    "params:sft.persona_tokens",
                    "params:sft.seed",
                    "params:llm",
                ],
                "sft_initial_model",
                name="add_persona_tokens",
            ),
            node(
                train_stage1,
                {
                    "sft_initial_model": "sft_initial_model",
                    "sft_traces_stage1": "sft_traces_stage1",
                    "stage1": "params:sft.stage1",
                    **_TRAINING,
                },
                ["sft_model_stage1", "sft_stage1_history"],
                name="train_sft_stage1",
            ),
            node(
                train_stage2,
                {
                    "sft_model_stage1": "sft_model_stage1",
                    "sft_traces_stage2": "sft_traces_stage2",
                    "stage2": "params:sft.stage2",
                    **_TRAINING,
                },
                ["sft_model", "sft_stage2_history"],
                name="train_sft_stage2",
            ),
            node(
                train_single_stage,
                {
                    "sft_initial_model": "sft_initial_model",
                    "sft_traces_stage1": "sft_traces_stage1",
                    "sft_traces_stage2": "sft_traces_stage2",
                    "stage1": "params:sft.stage1",
                    "stage2": "params:sft.stage2",
                    "single_stage": "params:sft.single_stage",
                    **_TRAINING,
                },
                ["sft_model_single_stage", "sft_single_stage_history"],
                name="train_sft_single_stage",
            ),
            node(
                calibrate_sft_agent,
                [
                    "sft_traces_stage2",
                    "sft_model",
                    "params:sft.stage2",
                    "params:sft.calibration",
                    "params:sft.seed",
                    "params:llm",
                ],
                "sft_action_calibration",
                name="calibrate_sft_agent",
            ),
            node(
                evaluate_sft,
                [
                    "sft_traces_stage2",
                    "sft_model",
                    "sft_model_single_stage",
                    "sft_action_calibration",
                    "params:sft.evaluation",
                    "params:sft.model",
                    "params:sft.hf_cache_dir",
                    "params:llm",
                ],
                ["sft_evaluation", "sft_evaluation_mlflow_metrics"],
                name="evaluate_sft",
            ),
        ]
    )
