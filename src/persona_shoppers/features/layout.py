"""Column layout of the buyer vector (SimPersona Table 5): scalars, embedding channels, masks.

[ 16 behavioural scalars | viewed 128 | carted 128 | purchased 128 | 3 evidence masks ]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CHANNELS: tuple[str, ...] = ("viewed", "carted", "purchased")


@dataclass(frozen=True)
class FeatureLayout:
    """Where each group sits in the buyer vector; 16 + 3 x 128 + 3 = 403 by default."""

    n_scalars: int = 16
    embedding_dim: int = 128
    channels: tuple[str, ...] = CHANNELS

    @property
    def dim(self) -> int:
        return self.n_scalars + len(self.channels) * self.embedding_dim + len(self.channels)

    @property
    def scalars(self) -> slice:
        return slice(0, self.n_scalars)

    def channel(self, index: int) -> slice:
        """Columns of embedding channel ``index`` (0 viewed, 1 carted, 2 purchased)."""
        start = self.n_scalars + index * self.embedding_dim
        return slice(start, start + self.embedding_dim)

    @property
    def masks(self) -> slice:
        start = self.n_scalars + len(self.channels) * self.embedding_dim
        return slice(start, start + len(self.channels))

    def column_names(self, scalar_names: list[str]) -> list[str]:
        """Names of the vector's columns, e.g. for the `buyer_features` table."""
        if len(scalar_names) != self.n_scalars:
            raise ValueError(f"expected {self.n_scalars} scalar names, got {len(scalar_names)}")
        names = [f"x_{n}" for n in scalar_names]
        for channel in self.channels:
            names += [f"{channel}_emb_{i:03d}" for i in range(self.embedding_dim)]
        return names + [f"has_{channel}" for channel in self.channels]


def feature_matrix(buyer_features: pd.DataFrame) -> np.ndarray:
    """The buyer vectors of a `buyer_features` table: its columns from the first scalar
    (``x_n_sessions``) on, as a float32 (n, d) matrix."""
    start = buyer_features.columns.get_loc("x_n_sessions")
    return buyer_features.iloc[:, start:].to_numpy(dtype=np.float32)
