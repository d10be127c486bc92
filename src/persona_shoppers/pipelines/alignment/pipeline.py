"""The alignment pipeline: the PAARS suite, SimPersona's action-rate alignment, separation
tests and instruction-following benchmark, the ablations, A/B agreement, the report."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    answer_individual_tasks,
    build_alignment_cases,
    build_alignment_report,
    compute_alignment_metrics,
    run_instruction_following,
    score_query_perplexity,
)

_STORE = ["raw_products", "raw_collections", "raw_collection_products"]
_CASES = [
    "query_generation_cases",
    "item_selection_cases",
    "rank_selection_cases",
    "instruction_tasks",
]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_alignment_cases,
                ["enriched_events", "text_personas", *_STORE, "params:alignment"],
                _CASES,
                name="build_alignment_cases",
            ),
            node(
                score_query_perplexity,
                ["query_generation_cases", "params:alignment", "params:llm"],
                "query_perplexities",
                name="score_query_perplexity",
            ),
            node(
                answer_individual_tasks,
                [
                    "query_generation_cases",
                    "item_selection_cases",
                    "rank_selection_cases",
                    "text_personas",
                    "buyer_histories",
                    "persona_assignments",
                    "sft_model",
                    *_STORE,
                    "params:alignment",
                    "params:llm",
                ],
                "individual_task_answers",
                name="answer_individual_tasks",
            ),
            node(
                run_instruction_following,
                [
                    "instruction_tasks",
                    "persona_assignments",
                    "sft_model",
                    *_STORE,
                    "params:alignment",
                    "params:llm",
                ],
                "instruction_runs",
                name="run_instruction_following",
            ),
            node(
                compute_alignment_metrics,
                [
                    "query_generation_cases",
                    "query_perplexities",
                    "item_selection_cases",
                    "rank_selection_cases",
                    "individual_task_answers",
                    "instruction_runs",
                    "enriched_sessions",
                    "enriched_events",
                    "simulated_sessions",
                    "buyers",
                    "persona_assignments",
                    "persona_cards",
                    "ab_test_results",
                    "params:alignment",
                ],
                ["alignment_metrics", "alignment_details", "alignment_mlflow_metrics"],
                name="compute_alignment_metrics",
            ),
            node(
                build_alignment_report,
                ["alignment_metrics", "alignment_details", "population_recovery"],
                ["alignment_report", "alignment_plots"],
                name="build_alignment_report",
            ),
        ]
    )
