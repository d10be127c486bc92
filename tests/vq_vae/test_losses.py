"""Loss terms, class weights, k-means++ and the EMA codebook against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from persona_shoppers.features.layout import FeatureLayout
from persona_shoppers.vq_vae.losses import (
    EMACodebook,
    commitment_loss,
    compute_class_weights,
    group_reconstruction_loss,
    info_nce_loss,
    kmeans_plusplus,
    weighted_cross_entropy,
)

# 2 scalars | viewed 2 | carted 2 | purchased 2 | 3 masks  -> 11 columns
TINY = FeatureLayout(n_scalars=2, embedding_dim=2)


def _row(scalars, viewed, carted, purchased, masks):
    return [*scalars, *viewed, *carted, *purchased, *masks]


def _recon_case():
    x = torch.tensor(
        [
            _row([1, 2], [1, 0], [1, 1], [0, 0], [1, 1, 0]),
            _row([0, 0], [1, 0], [0, 0], [0, 0], [1, 0, 0]),
        ],
        dtype=torch.float32,
    )
    x_hat = torch.tensor(
        [
            _row([0, 2], [0, 1], [1, 0], [3, 1], [1, 0, 0]),
            # carted is masked for this buyer: garbage output must not count
            _row([1, 1], [2, 0], [-5, 3], [1, 7], [0.5, 0, 1]),
        ],
        dtype=torch.float32,
        requires_grad=True,
    )
    return x, x_hat


def test_group_reconstruction_masks_channels_and_averages_groups():
    x, x_hat = _recon_case()
    total, groups = group_reconstruction_loss(x_hat, x, TINY, mask_loss="mse")
    scalars = (1 + 0 + 1 + 1) / 4  # squared errors (1,0) and (1,1)
    viewed = (1.0 + 0.0) / 2  # cos 0 for row 0, cos 1 for row 1
    carted = 1 - 1 / math.sqrt(2)  # only row 0: cos([1,1],[1,0]) = 1/sqrt(2)
    masks = (0 + 1 + 0 + 0.25 + 0 + 1) / 6
    expected = (scalars + viewed + carted + masks) / 4  # purchased absent -> 4 groups
    assert groups["scalars"].item() == pytest.approx(scalars)
    assert groups["viewed"].item() == pytest.approx(viewed)
    assert groups["carted"].item() == pytest.approx(carted)
    assert groups["purchased"].item() == 0.0
    assert groups["masks"].item() == pytest.approx(masks)
    assert total.item() == pytest.approx(expected, rel=1e-6)

    total.backward()
    # the masked carted entries of row 1 and the absent purchased channel get no gradient
    assert torch.all(x_hat.grad[1, TINY.channel(1)] == 0)
    assert torch.all(x_hat.grad[:, TINY.channel(2)] == 0)
    assert torch.any(x_hat.grad[0, TINY.channel(1)] != 0)


def test_group_reconstruction_bce_on_mask_bits():
    x, x_hat = _recon_case()
    _, groups = group_reconstruction_loss(x_hat, x, TINY, mask_loss="bce")

    def bce(logit, y):
        p = 1 / (1 + math.exp(-logit))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    pairs = [(1, 1), (0, 1), (0, 0), (0.5, 1), (0, 0), (1, 0)]  # (logit, target)
    expected = sum(bce(logit, y) for logit, y in pairs) / 6
    assert groups["masks"].item() == pytest.approx(expected, rel=1e-6)


def test_group_reconstruction_all_channels_absent_uses_two_groups():
    x = torch.tensor([_row([1, 0], [1, 0], [1, 0], [1, 0], [0, 0, 0])], dtype=torch.float32)
    x_hat = torch.tensor([_row([0, 0], [0, 1], [0, 1], [0, 1], [0, 0, 0])], dtype=torch.float32)
    total, _ = group_reconstruction_loss(x_hat, x, TINY, mask_loss="mse")
    assert total.item() == pytest.approx((0.5 + 0.0) / 2)


def test_commitment_loss_is_mean_squared_error_with_stop_gradient():
    z_e = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    z_q = torch.tensor([[0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    loss = commitment_loss(z_e, z_q)
    assert loss.item() == pytest.approx((1 + 0 + 1 + 1) / 4)
    loss.backward()
    assert z_q.grad is None
    assert torch.allclose(z_e.grad, 2 * (z_e - z_q).detach() / 4)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_info_nce_three_anchors_one_positive(tau):
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    positives = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    has_positive = torch.tensor([True, False, False])
    loss = info_nce_loss(anchors, positives, has_positive, tau)
    s = 1 / math.sqrt(2)
    # anchor 0: candidates a1 (cos 0), a2 (cos -1), its positive (cos s); placeholders excluded
    denom = math.exp(0 / tau) + math.exp(-1 / tau) + math.exp(s / tau)
    expected = -(s / tau - math.log(denom))
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    loss.backward()
    assert anchors.grad.abs().sum() > 0


def test_info_nce_other_positives_are_in_the_denominator():
    tau = 0.5
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos 1/sqrt(2) and 1
    has_positive = torch.tensor([True, True])
    s = 1 / math.sqrt(2)
    l0 = -(s / tau - math.log(math.exp(0) + math.exp(s / tau) + math.exp(0)))
    l1 = -(1 / tau - math.log(math.exp(0) + math.exp(s / tau) + math.exp(1 / tau)))
    loss = info_nce_loss(anchors, positives, has_positive, tau)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)


def test_info_nce_without_positives_is_zero_and_differentiable():
    anchors = torch.randn(3, 4, requires_grad=True)
    loss = info_nce_loss(anchors, torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(anchors.grad == 0)


def test_weighted_cross_entropy_matches_hand_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0], [9.0, 9.0, 9.0]])
    labels = torch.tensor([0, 2, -1])  # last row unlabelled
    weights = torch.tensor([1.0, 2.0, 3.0])

    def nll(row, c):
        return -(row[c] - math.log(sum(math.exp(v) for v in row)))

    expected = (1.0 * nll([2.0, 0.0, -1.0], 0) + 3.0 * nll([0.5, 0.5, 1.0], 2)) / 2
    loss = weighted_cross_entropy(logits, labels, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unweighted = weighted_cross_entropy(logits, labels)
    assert unweighted.item() == pytest.approx(
        (nll([2.0, 0.0, -1.0], 0) + nll([0.5, 0.5, 1.0], 2)) / 2, rel=1e-6
    )


def test_compute_class_weights_inverse_frequency():
    w = compute_class_weights(np.array([0, 0, 1, 2]))
    np.testing.assert_allclose(w, [4 / 6, 4 / 3, 4 / 3])
    w2 = compute_class_weights(np.array([[0, 1], [0, 1], [1, 1], [-1, 0]]))
    # head 0: N=3, counts (2,1,0) -> (3/6, 3/3, 0); head 1: N=4, counts (1,3,0)
    np.testing.assert_allclose(w2, [[0.5, 1.0, 0.0], [4 / 3, 4 / 9, 0.0]])


def test_kmeans_plusplus_is_seeded_and_covers_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    z = (centres.repeat_interleave(10, dim=0) + 0.1 * torch.randn(40, 2, generator=gen)).float()

    def pick(seed):
        return kmeans_plusplus(z, 4, torch.Generator().manual_seed(seed))

    idx = pick(3)
    assert torch.equal(idx, pick(3))
    assert sorted((idx // 10).tolist()) == [0, 1, 2, 3]  # one centre per cluster
    assert not all(torch.equal(pick(s), idx) for s in range(4, 8))


def test_codebook_init_uses_rows_of_encoder_outputs():
    z = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    book = EMACodebook(num_codes=6, dim=5)
    idx = book.init_kmeans_plusplus(z, seed=7)
    assert len(set(idx.tolist())) == 6
    assert torch.equal(book.embedding, z[idx])
    assert bool(book.initialized)
    other = EMACodebook(num_codes=6, dim=5)
    assert torch.equal(other.init_kmeans_plusplus(z, seed=7), idx)


def test_ema_update_matches_eq7_for_hit_and_unhit_codes():
    book = EMACodebook(num_codes=3, dim=2, decay=0.9)
    book.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]])
    counts = book.ema_update(z, torch.tensor([0, 0, 1]))
    # zbar_0 = (2, 0), zbar_1 = (2, 2); code 2 is not hit
    expected = torch.tensor([[0.9 * 0 + 0.1 * 2, 0.0], [0.9 + 0.2, 0.9 + 0.2], [5.0, 5.0]])
    assert torch.allclose(book.embedding, expected)
    assert counts.tolist() == [2.0, 1.0, 0.0]
    assert torch.allclose(book.usage, torch.tensor([0.2, 0.1, 0.0]))


def test_dead_code_rule_threshold():
    book = EMACodebook(num_codes=4, dim=2, dead_code_alpha=0.1)
    book.usage.copy_(torch.tensor([10.0, 0.5, 2.0, 0.1]))  # mean 3.15 -> threshold 0.315
    assert book.dead_codes().tolist() == [False, False, False, True]


def test_dead_code_reset_only_after_warmup_on_interval():
    torch.manual_seed(0)
    book = EMACodebook(
        num_codes=4, dim=2, decay=0.9, reset_warmup=4, reset_every=2, reset_noise_std=0.0
    )
    book.embedding.copy_(torch.tensor([[0.0, 0.0], [9.0, 9.0], [8.0, 8.0], [7.0, 7.0]]))
    z = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.2, 0.0], [0.0, 0.2]])
    codes = torch.zeros(4, dtype=torch.long)  # everything goes to code 0
    resets = [book.step(z, codes) for _ in range(3)]
    assert resets == [0, 0, 0]  # step 2 is on the interval but inside the warm-up
    assert torch.equal(book.embedding[1:], torch.tensor([[9.0, 9.0], [8.0, 8.0], [7.0, 7.0]]))
    assert book.step(z, codes) == 3  # step 4: codes 1..3 are dead
    assert int(book.num_resets) == 3
    for row in book.embedding[1:]:  # reset to (noise-free) rows of the batch
        assert any(torch.equal(row, r) for r in z)
    assert book.step(z, codes) == 0  # step 5: not on the interval
    assert int(book.num_resets) == 3
    assert int(book.num_steps) == 5


def test_dead_code_reset_adds_noise():
    torch.manual_seed(0)
    book = EMACodebook(num_codes=2, dim=3, reset_warmup=1, reset_every=1, reset_noise_std=0.5)
    z = torch.zeros(4, 3)
    assert book.step(z, torch.zeros(4, dtype=torch.long)) == 1
    assert not torch.equal(book.embedding[1], torch.zeros(3))
