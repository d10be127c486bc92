"""Behaviour-aware VQ-VAE (SimPersona sec. 2.2, app. C-E) as a Lightning module
(``BehaviourVQVAE``: MLP encoder, EMA codebook, mirrored decoder, the loss of eq. 2) and its
datamodule (``BuyerVectorDataModule``: buyer vectors, labels and contrastive positives).

See docs/vq_vae.md, "Model (`persona_shoppers.vq_vae.BehaviourVQVAE`)".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from persona_shoppers.features.labels import AUX_HEADS
from persona_shoppers.features.layout import CHANNELS, FeatureLayout

from .losses import (
    EMACodebook,
    commitment_loss,
    group_reconstruction_loss,
    info_nce_loss,
    weighted_cross_entropy,
)

__all__ = ["AUX_HEADS", "BehaviourVQVAE", "BuyerVectorDataModule", "VQOutput"]


class VQOutput(NamedTuple):
    z_e: Tensor  # (B, D) encoder outputs
    codes: Tensor  # (B,) nearest code ids
    z_q: Tensor  # (B, D) straight-through quantised latents
    x_hat: Tensor  # (B, d_in) decoder output (mask columns are logits for mask_loss="bce")
    aux_logits: Tensor  # (B, n_heads, n_classes)


def _mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` blocks between consecutive sizes; the last Linear is plain."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class BehaviourVQVAE(pl.LightningModule):
    """Behaviour-aware VQ-VAE; every hyperparameter is a constructor argument (paper defaults).

    Args:
        n_scalars, embedding_dim, channels: the buyer-vector layout (16 + 3 x 128 + 3 = 403).
        hidden_dims: encoder hidden sizes (decoder mirrors them); latent_dim: D.
        dropout: dropout after each hidden ReLU.
        num_codes: K. ema_decay: gamma of eq. 7. usage_decay: decay of the usage EMA (None:
            ema_decay). dead_code_alpha: alpha of eq. 8. reset_every / reset_warmup: dead-code
            reset interval and warm-up in training steps. reset_noise_std: std of the noise added
            to reset codes.
        lambda_recon, beta, lambda_contrastive, tau, lambda_aux: loss weights / temperature.
        mask_loss: ``"bce"`` or ``"mse"`` for the evidence-mask reconstruction group.
        class_weights: ``(3 heads, n_classes)`` CE weights (see ``compute_class_weights``);
            None: all ones.
        n_classes: classes per auxiliary head.
        lr, weight_decay, optimizer: ``"adamw"`` or ``"adam"``.
        kmeans_init: k-means++ codebook init at fit start; init_seed: its seed.
        init_batch_size, assign_batch_size: batch sizes of the init pass and of :meth:`assign`.
    """

    def __init__(
        self,
        n_scalars: int = 16,
        embedding_dim: int = 128,
        channels: Sequence[str] = CHANNELS,
        hidden_dims: Sequence[int] = (256, 128),
        latent_dim: int = 96,
        dropout: float = 0.1,
        num_codes: int = 256,
        ema_decay: float = 0.9,
        usage_decay: float | None = None,
        dead_code_alpha: float = 0.1,
        reset_every: int = 50,
        reset_warmup: int = 100,
        reset_noise_std: float = 0.01,
        lambda_recon: float = 0.3,
        beta: float = 0.75,
        lambda_contrastive: float = 0.15,
        tau: float = 0.1,
        lambda_aux: float = 0.5,
        mask_loss: str = "bce",
        class_weights: Sequence[Sequence[float]] | None = None,
        n_classes: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        optimizer: str = "adamw",
        kmeans_init: bool = True,
        init_seed: int = 0,
        init_batch_size: int = 4096,
        assign_batch_size: int = 4096,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if mask_loss not in ("bce", "mse"):
            raise ValueError(f"mask_loss must be 'bce' or 'mse', got {mask_loss!r}")
        self.layout = FeatureLayout(
            n_scalars=n_scalars, embedding_dim=embedding_dim, channels=tuple(channels)
        )
        sizes = [self.layout.dim, *hidden_dims, latent_dim]
        self.encoder = _mlp(sizes, dropout)
        self.decoder = _mlp(sizes[::-1], dropout)
        self.codebook = EMACodebook(
            num_codes=num_codes,
            dim=latent_dim,
            decay=ema_decay,
            usage_decay=usage_decay,
            dead_code_alpha=dead_code_alpha,
            reset_every=reset_every,
            reset_warmup=reset_warmup,
            reset_noise_std=reset_noise_std,
        )
        self.heads = nn.ModuleList(nn.Linear(latent_dim, n_classes) for _ in AUX_HEADS)
        if class_weights is None:
            weights = torch.ones(len(AUX_HEADS), n_classes)
        else:
            weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float32))
            if weights.shape != (len(AUX_HEADS), n_classes):
                raise ValueError(
                    f"class_weights must have shape {(len(AUX_HEADS), n_classes)}, "
                    f"got {tuple(weights.shape)}"
                )
        self.register_buffer("class_weights", weights)
        # per-epoch code usage (not saved in checkpoints)
        self.register_buffer("_train_counts", torch.zeros(num_codes), persistent=False)
        self.register_buffer("_val_counts", torch.zeros(num_codes), persistent=False)
        self._resets_at_epoch_start = 0

    # ------------------------------------------------------------------ model
    def encode(self, x: Tensor) -> Tensor:
        """Encoder outputs ``z_e`` (B, D)."""
        return self.encoder(x)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codes and straight-through ``z_q = z_e + (e_k - z_e).detach()``."""
        codes = self.codebook.nearest(z_e)
        e = self.codebook.lookup(codes)
        return codes, z_e + (e - z_e).detach()

    def decode(self, z_q: Tensor) -> Tensor:
        """Decoder output (B, d_in); the 3 mask columns are logits when ``mask_loss="bce"``."""
        return self.decoder(z_q)

    def aux_logits(self, z_q: Tensor) -> Tensor:
        """Logits of the 3 auxiliary heads, (B, 3, n_classes)."""
        return torch.stack([head(z_q) for head in self.heads], dim=1)

    def forward(self, x: Tensor) -> VQOutput:
        z_e = self.encode(x)
        codes, z_q = self.quantize(z_e)
        return VQOutput(z_e, codes, z_q, self.decode(z_q), self.aux_logits(z_q))

    def _eval_batched(self, x: Tensor | np.ndarray, batch_size: int, fn) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            x = torch.as_tensor(_writable(x), dtype=torch.float32)
            out = []
            with torch.no_grad():
                for start in range(0, x.shape[0], batch_size):
                    chunk = x[start : start + batch_size].to(self.device)
                    out.append(fn(chunk))
            if not out:
                return torch.empty(0, device=self.device)
            return torch.cat(out)
        finally:
            self.train(was_training)

    def assign(self, x: Tensor | np.ndarray) -> Tensor:
        """Code id per row (eval mode, no grad, batched); LongTensor on ``x``'s device (CPU
        for numpy input)."""
        device = x.device if isinstance(x, Tensor) else torch.device("cpu")
        codes = self._eval_batched(
            x, self.hparams.assign_batch_size, lambda c: self.codebook.nearest(self.encode(c))
        )
        return codes.to(device=device, dtype=torch.long)

    def embed(self, x: Tensor | np.ndarray) -> Tensor:
        """Encoder outputs ``z_e`` per row (eval mode, no grad, batched)."""
        return self._eval_batched(x, self.hparams.assign_batch_size, self.encode)

    def init_codebook(self, x: Tensor | np.ndarray) -> Tensor:
        """k-means++ init of the codebook over the encoder outputs of ``x`` (eval mode, seeded
        by ``init_seed``); returns the chosen row ids of ``x``."""
        z = self._eval_batched(x, self.hparams.init_batch_size, self.encode)
        return self.codebook.init_kmeans_plusplus(z, seed=self.hparams.init_seed)

    # ------------------------------------------------------------------ losses
    def compute_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """All loss terms for a batch (no logging, no codebook update).

        Returns a dict with ``loss``, ``recon``, ``recon_<group>``, ``commit``, ``contrastive``,
        ``aux``, ``aux_<head>`` and the detached ``z_e`` / ``codes`` of the anchors.
        """
        hp = self.hparams
        x = batch["x"]
        n = x.shape[0]
        has_positive = batch["has_positive"]
        z_all = self.encode(torch.cat([x, batch["positive_x"]], dim=0))
        z_e, z_pos = z_all[:n], z_all[n:]
        codes, z_q = self.quantize(z_e)
        x_hat = self.decode(z_q)

        recon, groups = group_reconstruction_loss(x_hat, x, self.layout, hp.mask_loss)
        commit = commitment_loss(z_e, z_q)
        contrastive = info_nce_loss(z_e, z_pos, has_positive, hp.tau)
        logits = self.aux_logits(z_q)
        labels = batch["labels"]
        aux_terms = {
            name: weighted_cross_entropy(logits[:, h], labels[:, h], self.class_weights[h])
            for h, name in enumerate(AUX_HEADS)
        }
        aux = torch.stack(list(aux_terms.values())).sum()
        loss = (
            hp.lambda_recon * recon
            + hp.beta * commit
            + hp.lambda_contrastive * contrastive
            + hp.lambda_aux * aux
        )
        out = {"loss": loss, "recon": recon, "commit": commit, "contrastive": contrastive}
        out.update({f"recon_{k}": v for k, v in groups.items()})
        out["aux"] = aux
        out.update({f"aux_{k}": v for k, v in aux_terms.items()})
        out["z_e"] = z_e.detach()
        out["codes"] = codes
        return out

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        out = self.compute_losses(batch)
        z_e, codes = out.pop("z_e"), out.pop("codes")
        counts = torch.bincount(codes, minlength=self.hparams.num_codes).to(self._train_counts)
        if stage == "train":
            self.codebook.step(z_e, codes)
            self._train_counts += counts
        else:
            self._val_counts += counts
        n = batch["x"].shape[0]
        for name, value in out.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=False,
                on_epoch=True,
                batch_size=n,
                prog_bar=name == "loss",
            )
        return out["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self) -> None:
        if not self.hparams.kmeans_init or bool(self.codebook.initialized):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "all_train_x"):
            rank_zero_warn(
                "kmeans_init=True but the trainer has no datamodule with all_train_x(); "
                "the codebook keeps its random init (call init_codebook(x) yourself)."
            )
            return
        self.init_codebook(datamodule.all_train_x())

    @staticmethod
    def code_usage_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
        """``(active codes, perplexity exp(H(p)))`` of a code-count vector."""
        total = counts.sum()
        p = counts / total.clamp(min=1.0)
        entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
        return (counts > 0).sum().float(), torch.exp(entropy)

    def on_train_epoch_start(self) -> None:
        self._train_counts.zero_()
        self._resets_at_epoch_start = int(self.codebook.num_resets)

    def on_train_epoch_end(self) -> None:
        active, perplexity = self.code_usage_stats(self._train_counts)
        resets = int(self.codebook.num_resets) - self._resets_at_epoch_start
        self.log("train/active_codes", active, on_epoch=True)
        self.log("train/perplexity", perplexity, on_epoch=True)
        self.log("train/dead_code_resets", float(resets), on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._val_counts.zero_()

    def on_validation_epoch_end(self) -> None:
        active, perplexity = self.code_usage_stats(self._val_counts)
        self.log("val/active_codes", active, on_epoch=True)
        self.log("val/perplexity", perplexity, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        return cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


# ====================================================================== data
class _PairSampler(Sampler[Tensor]):
    """Yields ``(B, 2)`` tensors of ``(anchor row, positive row or -1)`` per batch.

    Runs in the main process, so shuffling and positive sampling come from one seeded
    ``torch.Generator`` (created with the sampler, advancing across epochs) whatever num_workers.
    """

    def __init__(
        self,
        n: int,
        positives: np.ndarray | None,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        if positives is None:
            self.compact = torch.full((n, 1), -1, dtype=torch.long)
            self.n_valid = torch.zeros(n, dtype=torch.long)
        else:
            pos = torch.as_tensor(np.asarray(positives), dtype=torch.long)
            valid = pos >= 0
            # valid ids first, order kept (stable sort of the "invalid" flag)
            order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
            self.compact = torch.gather(pos, 1, order)
            self.n_valid = valid.sum(dim=1)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = torch.arange(self.n)
        u = torch.rand(self.n, generator=self.generator)  # one draw per row and epoch
        for b in range(len(self)):
            window = slice(b * self.batch_size, (b + 1) * self.batch_size)
            rows = order[window]
            k = self.n_valid[rows]
            col = torch.minimum((u[window] * k).long(), (k - 1).clamp(min=0))
            pos = self.compact[rows, col]
            pos = torch.where(k > 0, pos, torch.full_like(pos, -1))
            yield torch.stack([rows, pos], dim=1)


class _BuyerBatches(Dataset):
    """Fetches a whole batch from a ``(B, 2)`` pair tensor (vectorised, no collate)."""

    def __init__(self, x: Tensor, labels: Tensor) -> None:
        self.x = x
        self.labels = labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, pairs: Tensor) -> dict[str, Tensor]:
        rows, pos = pairs[:, 0], pairs[:, 1]
        has_positive = pos >= 0
        positive_x = self.x[pos.clamp(min=0)] * has_positive.unsqueeze(1).to(self.x.dtype)
        return {
            "x": self.x[rows],
            "labels": self.labels[rows],
            "positive_x": positive_x,
            "has_positive": has_positive,
        }


def _writable(x: Any) -> Any:
    """``x``, copied if it is a read-only numpy array (Arrow-backed frames give those;
    PyTorch warns about tensors over them)."""
    return x.copy() if isinstance(x, np.ndarray) and not x.flags.writeable else x


def _labels_tensor(labels: np.ndarray | None, n: int, n_heads: int) -> Tensor:
    if labels is None:
        return torch.full((n, n_heads), -1, dtype=torch.long)
    t = torch.as_tensor(_writable(np.asarray(labels)), dtype=torch.long)
    if t.shape != (n, n_heads):
        raise ValueError(f"labels must have shape {(n, n_heads)}, got {tuple(t.shape)}")
    return t


def _check_positives(positives: np.ndarray | None, n: int) -> np.ndarray | None:
    if positives is None:
        return None
    pos = np.asarray(positives)
    if pos.ndim != 2 or pos.shape[0] != n:
        raise ValueError(f"positives must have shape ({n}, F), got {pos.shape}")
    if pos.size and (pos.max() >= n or pos.min() < -1):
        raise ValueError(f"positives must be row ids in [0, {n}) or -1 padding")
    return pos


class BuyerVectorDataModule(pl.LightningDataModule):
    """Buyer vectors, auxiliary labels and contrastive positives as Lightning dataloaders.

    Args:
        train_x, val_x: ``(N, d)`` float arrays (``val_x`` optional).
        train_labels, val_labels: ``(N, 3)`` int arrays (in ``AUX_HEADS`` order), -1 =
            unlabelled; None: all unlabelled.
        train_positives: ``(N, F)`` int array of row ids into ``train_x``, -1 padded; each batch
            samples one per anchor uniformly among its valid ids. val_positives: same for val.
        batch_size, seed (shuffling and positive sampling), num_workers, drop_last.

    Each batch is ``dict(x (B, d), labels (B, 3) long, positive_x (B, d; zeros where no
    positive), has_positive (B,) bool)``.
    """

    def __init__(
        self,
        train_x: np.ndarray,
        val_x: np.ndarray | None = None,
        train_labels: np.ndarray | None = None,
        val_labels: np.ndarray | None = None,
        train_positives: np.ndarray | None = None,
        val_positives: np.ndarray | None = None,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.drop_last = drop_last
        n_heads = len(AUX_HEADS)
        self.train_x = torch.tensor(np.asarray(train_x), dtype=torch.float32)
        n = self.train_x.shape[0]
        self.train_labels = _labels_tensor(train_labels, n, n_heads)
        self.train_positives = _check_positives(train_positives, n)
        if val_x is None:
            self.val_x = None
        else:
            self.val_x = torch.tensor(np.asarray(val_x), dtype=torch.float32)
            m = self.val_x.shape[0]
            self.val_labels = _labels_tensor(val_labels, m, n_heads)
            self.val_positives = _check_positives(val_positives, m)

    def all_train_x(self) -> Tensor:
        """All training rows ``(N, d)`` (for the k-means++ codebook init)."""
        return self.train_x

    def _loader(self, x, labels, positives, shuffle: bool, seed: int, drop_last: bool) -> Any:
        sampler = _PairSampler(x.shape[0], positives, self.batch_size, shuffle, seed, drop_last)
        return DataLoader(
            _BuyerBatches(x, labels),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            self.train_x,
            self.train_labels,
            self.train_positives,
            shuffle=True,
            seed=self.seed,
            drop_last=self.drop_last,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_x is None:
            return []
        return self._loader(
            self.val_x,
            self.val_labels,
            self.val_positives,
            shuffle=False,
            seed=self.seed + 1,
            drop_last=False,
        )
