"""The fitted transforms of SimPersona Table 5 (log, smoothed logit rates, robust z, per-channel
PCA of product embeddings), fitted on training rows only and persisted so a new buyer is
featurised in one pass.

See docs/feature_engineering.md, "Transforms (`BuyerFeatureTransformer`)" and
"Featurising a new buyer in one pass".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from persona_shoppers.clickstream.buyers import (
    BEHAVIOURAL_FEATURES,
    FEATURE_GROUPS,
    RATE_NUMERATORS,
)

from .labels import aux_labels, fit_aux_edges
from .layout import CHANNELS, FeatureLayout

logger = logging.getLogger(__name__)

LOG_GROUPS = ("exposure_volume", "engagement", "dollar_values")


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(centre, scale) of the robust z-score: median and IQR, MAD x 1.4826 if the IQR is 0."""
    centre = float(np.median(values))
    q75, q25 = np.percentile(values, [75, 25])
    scale = float(q75 - q25)
    if scale == 0:
        scale = float(np.median(np.abs(values - centre)) * 1.4826)
    return centre, scale if scale > 0 else 1.0


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass
class BuyerFeatureTransformer:
    """Turns the `buyers` table and per-buyer channel means into the 403-d buyer vectors."""

    embedding_dim: int = 128
    laplace_alpha: float = 1.0
    laplace_beta: float = 1.0
    logit_eps: float = 1e-4
    seed: int = 0
    scalar_centre: np.ndarray = field(default=None, repr=False)
    scalar_scale: np.ndarray = field(default=None, repr=False)
    channel_mean: dict = field(default_factory=dict, repr=False)
    channel_std: dict = field(default_factory=dict, repr=False)
    pca: dict = field(default_factory=dict, repr=False)
    explained_variance: dict = field(default_factory=dict)
    aux_edges: dict = field(default_factory=dict)

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(n_scalars=len(BEHAVIOURAL_FEATURES), embedding_dim=self.embedding_dim)

    def raw_scalars(self, buyers: pd.DataFrame) -> np.ndarray:
        """The 16 features before robust scaling: log1p, smoothed logit rates, logit intent."""
        missing = [c for c in BEHAVIOURAL_FEATURES if c not in buyers.columns]
        if missing:
            raise ValueError(f"buyers: missing behavioural feature columns {missing}")
        columns = []
        n_sessions = buyers["n_sessions"].to_numpy(dtype=float)
        for name in BEHAVIOURAL_FEATURES:
            x = buyers[name].to_numpy(dtype=float)
            if name in FEATURE_GROUPS["funnel_rates"]:
                # Counts behind the rate: its numerator column, or rate x sessions where that
                # column is absent (browse_only_sessions is not one of the 16 features).
                numerator = RATE_NUMERATORS.get(name)
                n = (
                    buyers[numerator].to_numpy(dtype=float)
                    if numerator in buyers.columns
                    else np.rint(x * n_sessions)
                )
                x = logit(
                    (n + self.laplace_alpha) / (n_sessions + self.laplace_alpha + self.laplace_beta)
                )
            elif name in FEATURE_GROUPS["intent_strength"]:
                x = logit(x, self.logit_eps)
            else:
                x = np.log1p(np.maximum(x, 0.0))
            columns.append(x)
        return np.stack(columns, axis=1)

    def fit(self, buyers: pd.DataFrame, channels: dict[str, tuple[np.ndarray, np.ndarray]]):
        """Fit the robust scalers, per-dimension channel z-scores and PCAs on these buyers."""
        raw = self.raw_scalars(buyers)
        scales = [robust_scale(raw[:, j]) for j in range(raw.shape[1])]
        self.scalar_centre = np.array([c for c, _ in scales])
        self.scalar_scale = np.array([s for _, s in scales])
        self.aux_edges = fit_aux_edges(buyers)
        self.embedding_dim = self._fitted_dim({c: channels[c] for c in CHANNELS})
        for channel in CHANNELS:
            means, present = channels[channel]
            rows = means[present]
            self.channel_mean[channel] = rows.mean(axis=0)
            self.channel_std[channel] = np.maximum(rows.std(axis=0), 1e-6)
            z = (rows - self.channel_mean[channel]) / self.channel_std[channel]
            self.pca[channel] = PCA(n_components=self.embedding_dim, random_state=self.seed).fit(z)
            self.explained_variance[channel] = float(
                self.pca[channel].explained_variance_ratio_.sum()
            )
        return self

    def _fitted_dim(self, channels: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
        """The PCA dimension every channel can fit: ``embedding_dim``, or fewer where a
        channel has too few training buyers (a small log) or narrower embeddings, with a
        warning naming the channel."""
        rows = {c: int(present.sum()) for c, (_, present) in channels.items()}
        limits = {c: min(rows[c] - 1, means.shape[1]) for c, (means, _) in channels.items()}
        channel = min(limits, key=limits.get)
        n_rows = rows[channel]
        if n_rows < 2:
            raise ValueError(
                f"feature_engineering: channel '{channel}' has {n_rows} training buyers "
                "with such events; its embedding needs at least 2 (docs/feature_engineering.md)"
            )
        fitted = min(self.embedding_dim, limits[channel])
        if fitted < self.embedding_dim:
            logger.warning(
                "feature_engineering: channel '%s' (%d training buyers, %d-d embeddings) cannot "
                "fit a PCA to %d dims (embedding_pca_dim); every channel uses %d dims",
                channel,
                n_rows,
                channels[channel][0].shape[1],
                self.embedding_dim,
                fitted,
            )
        return fitted

    def transform(
        self, buyers: pd.DataFrame, channels: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """The (n, 403) float32 buyer vectors, in one pass."""
        if self.scalar_centre is None:
            raise RuntimeError("BuyerFeatureTransformer.transform called before fit")
        layout = self.layout
        out = np.zeros((len(buyers), layout.dim), dtype=np.float32)
        out[:, layout.scalars] = (self.raw_scalars(buyers) - self.scalar_centre) / self.scalar_scale
        for i, channel in enumerate(CHANNELS):
            means, present = channels[channel]
            weight, bias = self._projection(channel)
            projected = means.astype(np.float32, copy=False) @ weight + bias
            out[:, layout.channel(i)] = np.where(present[:, None], projected, 0.0)
            out[:, layout.masks.start + i] = present
        return out

    def _projection(self, channel: str) -> tuple[np.ndarray, np.ndarray]:
        """z-score then PCA folded into one float32 affine map: x @ W + b.

        (x - mu) / sd, minus the PCA mean m, times the components C^T equals
        x @ (C / sd)^T - (mu / sd + m) @ C^T.
        """
        pca, mu, sd = self.pca[channel], self.channel_mean[channel], self.channel_std[channel]
        weight = (pca.components_ / sd).T.astype(np.float32)
        bias = (-(mu / sd + pca.mean_) @ pca.components_.T).astype(np.float32)
        return weight, bias

    def labels(self, buyers: pd.DataFrame) -> np.ndarray:
        """(n, 3) auxiliary bins (engagement, exploration, purchase) with the fitted edges."""
        if not self.aux_edges:
            raise RuntimeError("BuyerFeatureTransformer.labels called before fit")
        return aux_labels(buyers, self.aux_edges)
