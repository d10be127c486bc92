"""The alignment pipeline: the PAARS suite, SimPersona's action-rate alignment, separation
tests and instruction-following benchmark, the ablations, A/B agreement (one node per metric
family, then their merge), the report."""

from kedro.pipeline import Pipeline, node

from persona_shoppers.alignment.metrics import (
    ab_metrics,
    ablation_metrics,
    action_rate_metrics,
    instruction_metrics,
    item_selection_metrics,
    rank_selection_metrics,
    separation_metrics,
)

from .nodes import (
    answer_individual_tasks,
    build_alignment_cases,
    build_alignment_report,
    measure_query_generation,
    measure_sessions,
    merge_alignment_metrics,
    run_instruction_following,
    score_query_perplexity,
)

_CASES = [
    "query_generation_cases",
    "item_selection_cases",
    "rank_selection_cases",
    "instruction_tasks",
    "human_reference_pairs",
]
_SEED = "params:alignment.seed"
_LLM_CACHE = "params:alignment.llm_cache"
_DRAWS = "params:alignment.bootstrap_draws"
_POPULATION = "params:alignment.population"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_alignment_cases,
                [
                    "held_out_events",
                    "text_personas",
                    "raw_products",
                    "storefronts",
                    "params:alignment.cases",
                    "params:alignment.instruction_following",
                    _SEED,
                ],
                _CASES,
                name="build_alignment_cases",
            ),
            node(
                score_query_perplexity,
                [
                    "query_generation_cases",
                    _LLM_CACHE,
                    "params:alignment.perplexity_strata",
                    "params:llm",
                ],
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
                    "sft_model",
                    "raw_products",
                    "storefronts",
                    "params:alignment.individual_tasks",
                    "params:alignment.history_chars",
                    _LLM_CACHE,
                    _SEED,
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
                    "storefronts",
                    "params:alignment.instruction_following",
                    _SEED,
                    "params:llm",
                ],
                "instruction_runs",
                name="run_instruction_following",
            ),
            node(
                measure_query_generation,
                {
                    "query_cases": "query_generation_cases",
                    "query_perplexities": "query_perplexities",
                    "individual_answers": "individual_task_answers",
                    "reference_pairs": "human_reference_pairs",
                    "embedding_model": "params:alignment.embedding_model",
                    "embedding_cache_dir": "params:alignment.embedding_cache_dir",
                    "kde": "params:alignment.kde",
                    "seed": _SEED,
                    "bootstrap_draws": _DRAWS,
                },
                ["query_generation_metrics", "query_generation_details"],
                name="measure_query_generation",
            ),
            node(
                item_selection_metrics,
                {
                    "item_cases": "item_selection_cases",
                    "answers": "individual_task_answers",
                    "events": "held_out_events",
                    "seed": _SEED,
                    "draws": _DRAWS,
                },
                "item_selection_metrics",
                name="measure_item_selection",
            ),
            node(
                rank_selection_metrics,
                {
                    "rank_cases": "rank_selection_cases",
                    "answers": "individual_task_answers",
                    "reference_pairs": "human_reference_pairs",
                    "seed": _SEED,
                    "draws": _DRAWS,
                },
                ["rank_selection_metrics", "rank_selection_details"],
                name="measure_rank_selection",
            ),
            node(
                measure_sessions,
                {
                    "enriched_sessions": "enriched_sessions",
                    "simulated_sessions": "simulated_sessions",
                    "storefronts": "storefronts",
                    "session": "params:alignment.session",
                    "population": _POPULATION,
                    "seed": _SEED,
                    "bootstrap_draws": _DRAWS,
                },
                ["session_metrics", "session_details"],
                name="measure_sessions",
            ),
            node(
                action_rate_metrics,
                {
                    "simulated": "simulated_sessions",
                    "enriched_sessions": "enriched_sessions",
                    "buyers": "buyers",
                    "assignments": "persona_assignments",
                    "population": _POPULATION,
                    "seed": _SEED,
                    "draws": _DRAWS,
                },
                ["action_rate_metrics", "action_rate_details"],
                name="measure_action_rates",
            ),
            node(
                separation_metrics,
                {
                    "simulated": "simulated_sessions",
                    "persona_cards": "persona_cards",
                    "population": _POPULATION,
                    "permutation_draws": "params:alignment.permutation_draws",
                    "seed": _SEED,
                    "draws": _DRAWS,
                },
                "separation_metrics",
                name="measure_separation",
            ),
            node(
                instruction_metrics,
                {"runs": "instruction_runs", "seed": _SEED, "draws": _DRAWS},
                "instruction_following_metrics",
                name="measure_instruction_following",
            ),
            node(
                ablation_metrics,
                {
                    "simulated": "simulated_sessions",
                    "ablations": "params:alignment.ablations",
                    "population": "params:alignment.ablation_population",
                    "seed": _SEED,
                    "draws": _DRAWS,
                },
                "ablation_metrics",
                name="measure_ablations",
            ),
            node(
                ab_metrics,
                "ab_test_results",
                "ab_test_metrics",
                name="measure_ab_tests",
            ),
            node(
                merge_alignment_metrics,
                [  # each family's metrics (in memory), then the details the report plots
                    "query_generation_metrics",
                    "item_selection_metrics",
                    "rank_selection_metrics",
                    "session_metrics",
                    "action_rate_metrics",
                    "separation_metrics",
                    "instruction_following_metrics",
                    "ablation_metrics",
                    "ab_test_metrics",
                    "query_generation_details",
                    "rank_selection_details",
                    "session_details",
                    "action_rate_details",
                ],
                ["alignment_metrics", "alignment_details", "alignment_mlflow_metrics"],
                name="merge_alignment_metrics",
            ),
            node(
                build_alignment_report,
                ["alignment_metrics", "alignment_details", "population_recovery"],
                ["alignment_report", "alignment_plots"],
                name="build_alignment_report",
            ),
        ]
    )
