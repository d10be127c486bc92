"""Loss terms and the EMA codebook of the behaviour-aware VQ-VAE (SimPersona sec. 2.2, app. C-E),
each a plain function or a small ``nn.Module`` so it can be tested on a handful of rows.

See docs/vq_vae.md, "Model (`persona_shoppers.vq_vae.BehaviourVQVAE`)".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from persona_shoppers.features.layout import FeatureLayout

__all__ = [
    "EMACodebook",
    "commitment_loss",
    "compute_class_weights",
    "group_reconstruction_loss",
    "info_nce_loss",
    "kmeans_plusplus",
    "weighted_cross_entropy",
]

MASK_LOSSES = ("bce", "mse")


def group_reconstruction_loss(
    x_hat: Tensor,
    x: Tensor,
    layout: FeatureLayout,
    mask_loss: str = "bce",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Group-aware reconstruction loss; returns ``(loss, per-group losses)``.

    Groups (each reduced to one number by its own mean, so the 384 embedding dimensions do not
    outweigh the 16 scalars):

    * ``scalars``: MSE over all rows and the ``layout.n_scalars`` columns.
    * one group per embedding channel (``viewed``, ``carted``, ``purchased``): cosine distance
      ``1 - cos(x_hat_c, x_c)`` per row, averaged over the rows whose evidence mask for that
      channel (taken from the *input* ``x``, bit > 0.5) is set. A buyer who never carted
      contributes nothing to the carted group. If no row of the batch has the channel, that
      group is absent: it contributes 0 and is left out of the mean over groups (its entry in
      the returned dict is 0).
    * ``masks``: the 3 evidence bits. ``mask_loss="bce"`` (default) treats the decoder's mask
      outputs as logits and uses binary cross-entropy with logits; ``"mse"`` uses plain MSE on
      the raw outputs.

    ``loss = mean over present groups of each group's mean``.
    """
    if mask_loss not in MASK_LOSSES:
        raise ValueError(f"mask_loss must be one of {MASK_LOSSES}, got {mask_loss!r}")
    scalars = F.mse_loss(x_hat[:, layout.scalars], x[:, layout.scalars])

    target_masks = x[:, layout.masks]
    present = (target_masks > 0.5).to(x.dtype)  # (B, C)
    cos = torch.stack(
        [
            F.cosine_similarity(x_hat[:, layout.channel(c)], x[:, layout.channel(c)], dim=1)
            for c in range(len(layout.channels))
        ],
        dim=1,
    )  # (B, C)
    rows = present.sum(dim=0)  # (C,)
    channel_loss = ((1.0 - cos) * present).sum(dim=0) / rows.clamp(min=1.0)  # 0 where absent
    n_channels_present = (rows > 0).to(x.dtype).sum()

    if mask_loss == "bce":
        masks = F.binary_cross_entropy_with_logits(x_hat[:, layout.masks], target_masks)
    else:
        masks = F.mse_loss(x_hat[:, layout.masks], target_masks)

    total = (scalars + masks + channel_loss.sum()) / (2.0 + n_channels_present)
    groups = {"scalars": scalars, "masks": masks}
    for c, name in enumerate(layout.channels):
        groups[name] = channel_loss[c]
    return total, groups


def commitment_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """``||z_e - sg(z_q)||^2`` as a mean over the batch and the latent dimensions.

    Averaging (rather than summing) over the D latent dims is the ``F.mse_loss`` convention of
    the reference VQ-VAE code; it keeps beta = 0.75 on the same scale as the other terms.
    Only the encoder receives gradient (the codebook is updated by EMA).
    """
    return F.mse_loss(z_e, z_q.detach())


def info_nce_loss(
    z_anchor: Tensor, z_positive: Tensor, has_positive: Tensor, tau: float = 0.1
) -> Tensor:
    """InfoNCE of eq. 9 over encoder outputs with cosine similarity / ``tau``.

    The candidate set is the batch's anchors plus the positives of the anchors that have one
    (``2B`` samples at most). For anchor ``i`` the numerator is ``exp(cos(a_i, p_i) / tau)``;
    the denominator runs over every candidate except ``a_i`` itself (all non-self samples,
    anchors and positives, its own positive included). Anchors with ``has_positive`` False are
    skipped and their placeholder positive rows are not candidates. The loss is the mean over
    anchors with a positive; 0 (still attached to the graph) when there is none.
    """
    batch = z_anchor.shape[0]
    has_positive = has_positive.to(torch.bool)
    a = F.normalize(z_anchor, dim=1)
    p = F.normalize(z_positive, dim=1)
    candidates = torch.cat([a, p], dim=0)  # (2B, D)
    logits = a @ candidates.T / tau  # (B, 2B)
    valid = torch.cat([torch.ones_like(has_positive), has_positive])  # (2B,)
    allowed = valid.unsqueeze(0).expand(batch, -1).clone()
    idx = torch.arange(batch, device=z_anchor.device)
    allowed[idx, idx] = False  # no self-similarity
    logits = logits.masked_fill(~allowed, float("-inf"))
    positive_logit = (a * p).sum(dim=1) / tau
    log_prob = positive_logit - torch.logsumexp(logits, dim=1)
    weight = has_positive.to(log_prob.dtype)
    return -(log_prob * weight).sum() / weight.sum().clamp(min=1.0)


def weighted_cross_entropy(
    logits: Tensor, labels: Tensor, weights: Tensor | None = None, ignore_index: int = -1
) -> Tensor:
    """Class-weighted cross-entropy of eq. 11, averaged over the labelled rows.

    ``loss = (1/n) * sum_i w[y_i] * (-log softmax(logits_i)[y_i])`` over the ``n`` rows whose
    label is not ``ignore_index``. Note: this divides by the number of rows (the literal mean of
    eq. 11), not by ``sum_i w[y_i]`` as ``F.cross_entropy(weight=...)`` does; with the weights of
    :func:`compute_class_weights` both agree in expectation (the weights sum to N over the
    training set). 0 when no row is labelled.
    """
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    nll = -F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    w = valid.to(nll.dtype)
    if weights is not None:
        w = w * weights.to(nll.dtype)[safe]
    return (w * nll).sum() / valid.to(nll.dtype).sum().clamp(min=1.0)


def compute_class_weights(labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Inverse-frequency weights ``w_c = N / (n_classes * n_c)`` (paper sec. 2.2 / app. D).

    ``labels``: ``(N,)`` or ``(N, H)`` integer class ids in ``[0, n_classes)``; negative values
    are unlabelled and ignored (N counts labelled rows only). Returns ``(n_classes,)`` or
    ``(H, n_classes)`` float64. A class with no rows gets weight 0 (it never occurs as a target).
    """
    arr = np.asarray(labels)
    squeeze = arr.ndim == 1
    if squeeze:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"labels must be 1-d or 2-d, got shape {arr.shape}")
    out = np.zeros((arr.shape[1], n_classes), dtype=np.float64)
    for h in range(arr.shape[1]):
        col = arr[:, h]
        col = col[col >= 0].astype(np.int64)
        if col.size and col.max() >= n_classes:
            raise ValueError(f"label {col.max()} out of range for {n_classes} classes")
        counts = np.bincount(col, minlength=n_classes).astype(np.float64)
        n = counts.sum()
        with np.errstate(divide="ignore"):
            out[h] = np.where(counts > 0, n / (n_classes * counts), 0.0)
    return out[0] if squeeze else out


def kmeans_plusplus(z: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices of ``k`` rows of ``z`` chosen by k-means++ seeding (D^2 sampling).

    The first centre is uniform; each next one is drawn with probability proportional to the
    squared distance to the nearest centre already chosen. When every row coincides with a
    chosen centre (fewer distinct rows than ``k``) the draw falls back to uniform, so duplicates
    are possible; those codes are then caught by the dead-code reset. ``generator`` (on
    ``z.device``) makes the choice reproducible and independent of the global RNG.
    """
    n = z.shape[0]
    if n == 0:
        raise ValueError("k-means++ needs at least one row")
    z = z.detach().float()
    chosen = torch.empty(k, dtype=torch.long, device=z.device)
    chosen[0] = torch.randint(n, (1,), generator=generator, device=z.device)
    min_d2 = ((z - z[chosen[0]]) ** 2).sum(dim=1)
    for i in range(1, k):
        weights = min_d2 if float(min_d2.sum()) > 0 else torch.ones_like(min_d2)
        j = torch.multinomial(weights, 1, generator=generator)
        chosen[i] = j[0]
        min_d2 = torch.minimum(min_d2, ((z - z[j]) ** 2).sum(dim=1))
    return chosen


class EMACodebook(nn.Module):
    """Codebook ``{e_1..e_K} in R^D`` updated by exponential moving averages, not by gradients.

    Update (eq. 7, applied literally): for each code ``k`` hit in the batch,
    ``e_k <- decay * e_k + (1 - decay) * zbar_k`` with ``zbar_k`` the mean of the batch's encoder
    outputs assigned to ``k``; codes not hit are left exactly unchanged. (This is deliberately not
    the sums-and-counts / Laplace-smoothed variant of van den Oord et al., which weights by counts
    and nudges unhit codes.)

    Usage: ``usage_k <- usage_decay * usage_k + (1 - usage_decay) * count_k`` for every code each
    step (unhit codes decay towards 0); ``usage_decay`` defaults to ``decay``. A code is dead when
    ``usage_k < alpha * mean(usage)`` (eq. 8). :meth:`step` counts training steps; after step
    ``s`` (1-based) dead codes are reset when ``s >= reset_warmup`` and ``s % reset_every == 0``
    (defaults: steps 100, 150, 200, ...) to randomly sampled encoder outputs of the current batch
    plus Gaussian noise of std ``reset_noise_std``; their usage is set to the current mean usage
    (a grace period: unused, it decays below the threshold by the next check). Resets draw from
    the global torch RNG, so they are reproducible under ``seed_everything``.
    """

    def __init__(
        self,
        num_codes: int = 256,
        dim: int = 96,
        decay: float = 0.9,
        usage_decay: float | None = None,
        dead_code_alpha: float = 0.1,
        reset_every: int = 50,
        reset_warmup: int = 100,
        reset_noise_std: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if reset_every < 1:
            raise ValueError(f"reset_every must be >= 1, got {reset_every}")
        self.num_codes = num_codes
        self.dim = dim
        self.decay = decay
        self.usage_decay = decay if usage_decay is None else usage_decay
        self.dead_code_alpha = dead_code_alpha
        self.reset_every = reset_every
        self.reset_warmup = reset_warmup
        self.reset_noise_std = reset_noise_std
        self.register_buffer("embedding", torch.randn(num_codes, dim))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_resets", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def distances(self, z: Tensor) -> Tensor:
        """Squared Euclidean distances ``(B, K)`` from each row of ``z`` to each code."""
        e = self.embedding
        d = (z * z).sum(dim=1, keepdim=True) - 2.0 * z @ e.T + (e * e).sum(dim=1).unsqueeze(0)
        return d.clamp(min=0.0)

    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest code (squared Euclidean) for each row; ties go to the lower id."""
        with torch.no_grad():
            return self.distances(z.detach()).argmin(dim=1)

    def lookup(self, codes: Tensor) -> Tensor:
        return self.embedding[codes]

    @torch.no_grad()
    def ema_update(self, z: Tensor, codes: Tensor) -> Tensor:
        """One EMA step (eq. 7) for the codes hit by ``codes``; returns per-code batch counts."""
        z = z.detach().to(self.embedding.dtype)
        onehot = F.one_hot(codes, self.num_codes).to(z.dtype)  # (B, K); matmul is deterministic
        counts = onehot.sum(dim=0)
        zbar = (onehot.T @ z) / counts.clamp(min=1.0).unsqueeze(1)
        updated = self.decay * self.embedding + (1.0 - self.decay) * zbar
        self.embedding.copy_(torch.where((counts > 0).unsqueeze(1), updated, self.embedding))
        self.usage.mul_(self.usage_decay).add_((1.0 - self.usage_decay) * counts)
        return counts

    def dead_codes(self) -> Tensor:
        """Boolean ``(K,)``: ``usage_k < alpha * mean(usage)`` (eq. 8)."""
        return self.usage < self.dead_code_alpha * self.usage.mean()

    def is_reset_step(self, step: int) -> bool:
        return step >= self.reset_warmup and step % self.reset_every == 0

    @torch.no_grad()
    def reset_dead(self, z: Tensor) -> int:
        """Re-initialise dead codes from random rows of ``z`` plus noise; returns how many."""
        dead = self.dead_codes()
        n_dead = int(dead.sum())
        if n_dead == 0 or z.shape[0] == 0:
            return 0
        z = z.detach().to(self.embedding.dtype)
        if n_dead <= z.shape[0]:
            rows = torch.randperm(z.shape[0], device=z.device)[:n_dead]
        else:
            rows = torch.randint(z.shape[0], (n_dead,), device=z.device)
        new = z[rows] + self.reset_noise_std * torch.randn(n_dead, self.dim, device=z.device)
        dead_idx = dead.nonzero().squeeze(1)
        self.embedding[dead_idx] = new
        self.usage[dead_idx] = self.usage.mean()
        self.num_resets += n_dead
        return n_dead

    @torch.no_grad()
    def step(self, z: Tensor, codes: Tensor) -> int:
        """A training step: EMA update, step count, dead-code reset when due; returns #reset."""
        self.ema_update(z, codes)
        self.num_steps += 1
        if self.is_reset_step(int(self.num_steps)):
            return self.reset_dead(z)
        return 0

    @torch.no_grad()
    def init_kmeans_plusplus(self, z: Tensor, seed: int = 0) -> Tensor:
        """Set the codebook to ``k``-means++-chosen rows of ``z``; returns the chosen row ids."""
        generator = torch.Generator(device=z.device)
        generator.manual_seed(int(seed))
        idx = kmeans_plusplus(z, self.num_codes, generator)
        self.embedding.copy_(z.detach()[idx].to(self.embedding))
        self.usage.zero_()
        self.initialized.fill_(True)
        return idx
