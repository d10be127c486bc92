"""The data_enrichment pipeline: raw contract -> quarantine, enriched events and sessions,
the buyer-shop table with strata, and buyer histories."""

from kedro.pipeline import Pipeline, node

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG

from .nodes import build_buyers, build_histories, build_sessions, sessionise_events, validate_events


def create_pipeline(**kwargs) -> Pipeline:
    """Five nodes; ``validated_events`` is an in-memory hand-off between the first two.

    Every node runs on the engine of its inputs (polars; Spark in ``--env spark``; buyer buckets
    in ``--env streaming``), so all carry the ``event_scale`` tag: they take those as they are.
    """
    return Pipeline(
        [
            node(
                validate_events,
                inputs=[
                    "raw_events",
                    "raw_products",
                    "raw_collections",
                    "params:data_enrichment.product_required_for",
                    "params:data_enrichment.price_required_for",
                    "params:data_enrichment.rows_per_bucket",
                ],
                outputs=["validated_events", "event_quarantine"],
                name="validate_events",
            ),
            node(
                sessionise_events,
                inputs=["validated_events", "params:data_enrichment.session_timeout_minutes"],
                outputs="enriched_events",
                name="sessionise_events",
            ),
            node(
                build_sessions,
                inputs="enriched_events",
                outputs="enriched_sessions",
                name="build_sessions",
            ),
            node(
                build_buyers,
                inputs=[
                    "enriched_events",
                    "enriched_sessions",
                    "params:data_enrichment.intent_weights",
                ],
                outputs="buyers",
                name="build_buyers",
            ),
            node(
                build_histories,
                inputs=["enriched_events", "params:data_enrichment.history"],
                outputs="buyer_histories",
                name="build_histories",
            ),
        ],
        tags=EVENT_SCALE_TAG,
    )
