"""Clustering-quality and population-recovery metrics (SimPersona Table 1, appendices B, H)."""

from .clustering import (
    agreement_with_truth,
    calinski_harabasz,
    cluster_report,
    codebook_usage,
    head_incoherence,
    incompatible_mixing,
    stratum_purity,
    within_cluster_cosine,
)
from .distributions import (
    centroids_from_assignments,
    js_divergence,
    js_divergence_rows,
    kl_divergence,
    predicted_mix,
    profiles_from_assignments,
    r_squared,
    token_distribution,
)

__all__ = [
    "agreement_with_truth",
    "calinski_harabasz",
    "centroids_from_assignments",
    "cluster_report",
    "codebook_usage",
    "head_incoherence",
    "incompatible_mixing",
    "js_divergence",
    "js_divergence_rows",
    "kl_divergence",
    "predicted_mix",
    "profiles_from_assignments",
    "r_squared",
    "stratum_purity",
    "token_distribution",
    "within_cluster_cosine",
]
