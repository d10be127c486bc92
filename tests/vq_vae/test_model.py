"""BehaviourVQVAE and BuyerVectorDataModule on tiny toy data."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from persona_shoppers.vq_vae import (
    AUX_HEADS,
    BehaviourVQVAE,
    BuyerVectorDataModule,
    compute_class_weights,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated.*"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval.*"),
]

N_SCALARS, EMB = 4, 8  # 4 + 3 x 8 + 3 = 31 columns
SMALL = dict(
    n_scalars=N_SCALARS,
    embedding_dim=EMB,
    hidden_dims=[32, 16],
    latent_dim=8,
    num_codes=16,
    reset_warmup=10,
    reset_every=5,
)


def toy_data(n_per: int = 40, seed: int = 0):
    """4 well-separated clusters of buyers with cluster-specific evidence masks."""
    rng = np.random.default_rng(seed)
    rows, labels, cluster = [], [], []
    for c in range(4):
        scalars = rng.normal(0, 3, N_SCALARS)
        emb = rng.normal(0, 1, (3, EMB))
        mask = np.array([1.0, c % 2, c // 2])
        for _ in range(n_per):
            e = (emb + 0.05 * rng.normal(size=emb.shape)) * mask[:, None]
            scal = scalars + 0.1 * rng.normal(size=N_SCALARS)
            rows.append(np.concatenate([scal, e.ravel(), mask]))
            labels.append([c % 3, (c + 1) % 3, c // 2])
            cluster.append(c)
    x = np.asarray(rows, dtype=np.float32)
    labels = np.asarray(labels)
    cluster = np.asarray(cluster)
    positives = np.full((len(x), 3), -1)
    for i in range(len(x)):
        same = np.flatnonzero(cluster == cluster[i])
        positives[i] = rng.choice(same[same != i], 3, replace=False)
    return x, labels, positives, cluster


def make_trainer(max_epochs: int, callbacks=None) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def fit_toy(max_epochs: int, callbacks=None, **kwargs):
    x, labels, positives, cluster = toy_data()
    L.seed_everything(0)
    dm = BuyerVectorDataModule(x, x[::4], labels, labels[::4], positives, batch_size=32, seed=0)
    model = BehaviourVQVAE(
        **SMALL, class_weights=compute_class_weights(labels).tolist(), lr=3e-3, **kwargs
    )
    trainer = make_trainer(max_epochs, callbacks)
    trainer.fit(model, dm)
    return model, trainer, (x, cluster)


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def test_architecture_and_forward_shapes():
    model = BehaviourVQVAE()
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(403, 256), (256, 128), (128, 96)]
    linears = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(96, 128), (128, 256), (256, 403)]
    assert model.codebook.embedding.shape == (256, 96)
    assert model.hparams.lambda_recon == 0.3 and model.hparams.beta == 0.75
    out = model(torch.randn(5, 403))
    assert out.z_e.shape == (5, 96) and out.z_q.shape == (5, 96)
    assert out.codes.dtype == torch.long and out.codes.shape == (5,)
    assert out.x_hat.shape == (5, 403)
    assert out.aux_logits.shape == (5, len(AUX_HEADS), 3)


def test_quantize_picks_nearest_code_and_straight_through_reaches_encoder():
    torch.manual_seed(0)
    model = BehaviourVQVAE(**SMALL)
    x = torch.randn(6, 31)
    z_e = model.encode(x)
    codes, z_q = model.quantize(z_e)
    d = ((z_e.detach()[:, None, :] - model.codebook.embedding[None]) ** 2).sum(-1)
    assert torch.equal(codes, d.argmin(dim=1))
    assert torch.allclose(z_q, model.codebook.embedding[codes], atol=1e-6)
    model.decode(z_q).sum().backward()  # decoder-only loss
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_losses_combine_with_paper_weights():
    torch.manual_seed(0)
    model = BehaviourVQVAE(**SMALL, class_weights=[[1, 2, 3]] * 3).eval()
    x = torch.randn(4, 31)
    batch = {
        "x": x,
        "labels": torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 0, 0]]),
        "positive_x": x.flip(0),
        "has_positive": torch.tensor([True, True, False, True]),
    }
    out = model.compute_losses(batch)
    aux = out["aux_engagement"] + out["aux_exploration"] + out["aux_purchase"]
    expected = 0.3 * out["recon"] + 0.75 * out["commit"] + 0.15 * out["contrastive"] + 0.5 * aux
    assert torch.allclose(out["loss"], expected)
    assert out["contrastive"] > 0


def test_class_weights_shape_is_checked():
    with pytest.raises(ValueError):
        BehaviourVQVAE(**SMALL, class_weights=[[1.0, 1.0]])


def test_datamodule_batches_and_positive_sampling():
    x, labels, positives, _ = toy_data(n_per=10)
    positives[0] = -1  # no positive for row 0
    positives[1] = [-1, 7, -1]  # exactly one
    dm = BuyerVectorDataModule(x, None, labels, None, positives, batch_size=16, seed=3)
    batches = list(dm.train_dataloader())
    assert sum(b["x"].shape[0] for b in batches) == len(x)
    b = batches[0]
    assert set(b) == {"x", "labels", "positive_x", "has_positive"}
    assert b["x"].shape == (16, 31) and b["labels"].dtype == torch.long
    seen = set()
    for batch in batches:
        for xi, pxi, has in zip(
            batch["x"], batch["positive_x"], batch["has_positive"], strict=True
        ):
            row = int(np.flatnonzero((x == xi.numpy()).all(axis=1))[0])
            seen.add(row)
            if row == 0:
                assert not has and torch.all(pxi == 0)
                continue
            assert has
            pos_row = int(np.flatnonzero((x == pxi.numpy()).all(axis=1))[0])
            assert pos_row in set(positives[row].tolist())
            if row == 1:
                assert pos_row == 7
    assert seen == set(range(len(x)))
    # seeded: a fresh loader repeats the first epoch; the next epoch reshuffles
    again = list(dm.train_dataloader())
    assert all(torch.equal(p["x"], q["x"]) for p, q in zip(batches, again, strict=True))
    loader = dm.train_dataloader()
    first, second = next(iter(loader)), next(iter(loader))
    assert not torch.equal(first["x"], second["x"])
    assert torch.equal(dm.all_train_x(), torch.as_tensor(x))


def test_kmeans_init_uses_encoder_outputs_and_is_seeded():
    x, labels, positives, _ = toy_data(n_per=10)
    L.seed_everything(0)
    model = BehaviourVQVAE(**SMALL)
    z = model._eval_batched(x, 1000, model.encode)
    idx = model.init_codebook(x)
    assert torch.allclose(model.codebook.embedding, z[idx])
    fresh = BehaviourVQVAE(**SMALL)
    fresh.load_state_dict(model.state_dict())
    fresh.codebook.initialized.fill_(False)
    assert torch.equal(fresh.init_codebook(x), idx)  # seeded by init_seed


def test_assign_is_batched_and_eval_mode():
    x, *_ = toy_data(n_per=10)
    torch.manual_seed(0)
    model = BehaviourVQVAE(**SMALL, assign_batch_size=7)
    model.train()
    codes = model.assign(torch.as_tensor(x))
    assert codes.dtype == torch.long and codes.shape == (len(x),)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        assert torch.equal(codes, model(torch.as_tensor(x)).codes)
    assert torch.equal(model.assign(x), codes)  # numpy input


def test_short_fit_separates_clusters_and_lowers_loss():
    recorder = LossRecorder()
    model, trainer, (x, cluster) = fit_toy(12, callbacks=[recorder])
    assert bool(model.codebook.initialized)
    assert recorder.losses[-1] < 0.7 * recorder.losses[0]
    codes = model.assign(x).numpy()
    majority = [np.bincount(codes[cluster == c]).argmax() for c in range(4)]
    assert len(set(majority)) == 4  # each cluster has its own code
    assert len(np.unique(codes)) >= 4
    metrics = trainer.callback_metrics
    aux = [f"aux_{head}" for head in AUX_HEADS]
    for key in ("recon", "commit", "contrastive", *aux):
        assert f"train/{key}" in metrics and f"val/{key}" in metrics
    assert metrics["train/active_codes"] >= 4
    assert 1.0 <= float(metrics["train/perplexity"]) <= 16.0
    assert "train/dead_code_resets" in metrics
    assert int(model.codebook.num_steps) == 12 * 5  # 160 rows / 32 per batch


def test_two_fits_are_identical():
    a, *_ = fit_toy(2)
    b, *_ = fit_toy(2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
