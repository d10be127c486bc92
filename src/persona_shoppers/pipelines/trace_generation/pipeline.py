"""The trace_generation pipeline: real sessions of training shops replayed in the textual
storefront as SFT examples (SimPersona 2.1.2). It also builds the ``storefronts`` that the
simulation and alignment pipelines shop in."""

from kedro.pipeline import Pipeline, node

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG

from .nodes import (
    build_storefronts,
    measure_trace_lengths,
    replay_trace_sessions,
    sample_trace_sessions,
    select_trace_events,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_storefronts,
                [
                    "raw_products",
                    "raw_collections",
                    "raw_collection_products",
                    "params:storefront.max_observation_tokens",
                ],
                "storefronts",
                name="build_storefronts",
            ),
            node(
                sample_trace_sessions,
                [
                    "enriched_sessions",
                    "persona_assignments",
                    "params:trace_generation.seed",
                    "params:trace_generation.sessions_per_token",
                    "params:trace_generation.validation_fraction",
                ],
                "trace_sessions",
                name="sample_trace_sessions",
            ),
            node(
                select_trace_events,
                ["enriched_events", "trace_sessions"],
                "trace_events",
                name="select_trace_events",
                # filters the log where it is (Spark, buckets), collects the rows
                tags=[EVENT_SCALE_TAG],
            ),
            node(
                replay_trace_sessions,
                [
                    "trace_sessions",
                    "trace_events",
                    "storefronts",
                    "params:trace_generation.max_progress_steps",
                ],
                ["sft_traces_stage1", "sft_traces_stage2", "trace_replay_report"],
                name="replay_trace_sessions",
            ),
            node(
                measure_trace_lengths,
                ["sft_traces_stage1", "sft_traces_stage2", "trace_replay_report", "params:llm"],
                ["trace_length_report", "trace_mlflow_metrics", "trace_length_plot"],
                name="measure_trace_lengths",
            ),
        ]
    )
