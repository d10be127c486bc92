import copy

import pytest
import torch

from persona_shoppers.sft.tokens import (
    add_persona_tokens,
    find_persona_tokens,
    initial_rows,
    is_tied,
    persona_token,
)

from .conftest import tiny_llama


def test_tokens_are_single_ids_and_tied_embeddings_stay_tied(base_tokenizer):
    tokenizer = copy.deepcopy(base_tokenizer)
    model = tiny_llama(tokenizer)
    old = model.get_input_embeddings().weight.detach().clone()
    persona = add_persona_tokens(model, tokenizer, 8, init="mean")

    assert persona.first == len(base_tokenizer) and persona.count == 8
    ids = tokenizer("Buyer profile: <|persona_3|>.", add_special_tokens=False)["input_ids"]
    assert ids.count(persona.first + 3) == 1
    assert tokenizer.decode([persona.first + 3]) == persona_token(3)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == persona.stop
    assert is_tied(model)
    assert torch.equal(weight[: len(base_tokenizer)], old)
    assert find_persona_tokens(tokenizer) == persona


def test_untied_output_rows_are_initialised_too(base_tokenizer):
    tokenizer = copy.deepcopy(base_tokenizer)
    model = tiny_llama(tokenizer, tied=False)
    persona = add_persona_tokens(model, tokenizer, 4, init="mean")
    assert not is_tied(model)
    head = model.get_output_embeddings().weight[persona.first :]
    mean = model.get_output_embeddings().weight[: persona.first].mean(0)
    assert head.shape[0] == 4
    assert torch.allclose(head, mean.expand_as(head), atol=0.05)


def test_adding_twice_fails(base_tokenizer):
    tokenizer = copy.deepcopy(base_tokenizer)
    model = tiny_llama(tokenizer)
    add_persona_tokens(model, tokenizer, 4)
    with pytest.raises(ValueError, match="already has persona tokens"):
        add_persona_tokens(model, tokenizer, 4)


def test_mean_init_is_the_mean_plus_small_noise():
    existing = torch.randn(500, 24) * 3 + 1
    rows = initial_rows(existing, 10, "mean", noise_std=0.02, seed=1)
    spread = existing.std(0)
    assert torch.all((rows - existing.mean(0)).abs() < 0.1 * spread)
    assert not torch.allclose(rows[0], rows[1])


@pytest.mark.parametrize("code_dim", [6, 24])
def test_codebook_init_keeps_code_geometry_and_embedding_statistics(code_dim):
    torch.manual_seed(0)
    existing = torch.randn(2000, 16, dtype=torch.float64) * torch.linspace(0.5, 2, 16) + 3
    codebook = torch.randn(12, code_dim, dtype=torch.float64) * 5
    rows = initial_rows(existing, 12, "codebook", codebook=codebook, seed=3)

    assert torch.allclose(rows.mean(0), existing.mean(0), atol=1e-9)
    ratio = (rows.std(0) / existing.std(0)).pow(2).mean()
    assert ratio == pytest.approx(12 / 11, rel=1e-6)  # unbiased std over 12 rows
    if code_dim <= 16:  # an isometry: distances in spread units mirror code distances
        scaled = (rows - rows.mean(0)) / existing.std(0)
        ratios = torch.pdist(scaled) / torch.pdist(codebook)
        assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-6)
    again = initial_rows(existing, 12, "codebook", codebook=codebook, seed=3)
    assert torch.equal(rows, again)


def test_codebook_init_checks_its_inputs():
    existing = torch.randn(50, 8)
    with pytest.raises(ValueError, match="needs the VQ-VAE codebook"):
        initial_rows(existing, 4, "codebook")
    with pytest.raises(ValueError, match="3 codes for 4 tokens"):
        initial_rows(existing, 4, "codebook", codebook=torch.randn(3, 8))
    with pytest.raises(ValueError, match="must be one of"):
        initial_rows(existing, 4, "zeros")
