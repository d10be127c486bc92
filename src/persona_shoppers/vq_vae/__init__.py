"""Models: the behaviour-aware VQ-VAE of SimPersona (sec. 2.2, app. C-E)."""

from .losses import (
    EMACodebook,
    commitment_loss,
    compute_class_weights,
    group_reconstruction_loss,
    info_nce_loss,
    kmeans_plusplus,
    weighted_cross_entropy,
)
from .model import AUX_HEADS, BehaviourVQVAE, BuyerVectorDataModule, VQOutput

__all__ = [
    "AUX_HEADS",
    "BehaviourVQVAE",
    "BuyerVectorDataModule",
    "EMACodebook",
    "VQOutput",
    "commitment_loss",
    "compute_class_weights",
    "group_reconstruction_loss",
    "info_nce_loss",
    "kmeans_plusplus",
    "weighted_cross_entropy",
]
