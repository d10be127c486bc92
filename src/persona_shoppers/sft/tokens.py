"""Persona tokens in the vocabulary: ``<|persona_0|>`` ... ``<|persona_{K-1}|>`` (SimPersona 2.3),
added as special tokens, with their embedding rows initialised (``mean`` or ``codebook``).

See docs/sft.md, "Initialising the persona rows".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from persona_shoppers.personas.token_format import is_persona_token, persona_token

logger = logging.getLogger(__name__)

INIT_METHODS = ("mean", "codebook")


@dataclass(frozen=True)
class PersonaTokens:
    """Where the persona tokens live in the vocabulary: ids ``first .. first + count - 1``."""

    first: int
    count: int

    @property
    def stop(self) -> int:
        return self.first + self.count

    def ids(self) -> list[int]:
        return list(range(self.first, self.stop))


def find_persona_tokens(tokenizer: Any, count: int | None = None) -> PersonaTokens:
    """The persona tokens of a tokenizer that has them (``count`` of them, default: all
    ``<|persona_k|>`` tokens it has); their ids must be contiguous."""
    if count is None:
        count = sum(is_persona_token(t) for t in tokenizer.get_added_vocab())
    if count < 1:
        raise ValueError("the tokenizer has no persona tokens")
    ids = tokenizer.convert_tokens_to_ids([persona_token(k) for k in range(count)])
    unknown = tokenizer.unk_token_id
    if any(i is None or i == unknown for i in ids):
        raise ValueError(f"the tokenizer lacks some of the {count} persona tokens")
    if ids != list(range(ids[0], ids[0] + count)):
        raise ValueError("the persona tokens do not have contiguous ids")
    return PersonaTokens(first=ids[0], count=count)


def is_tied(model: Any) -> bool:
    """Whether the model's input and output embeddings are one tensor."""
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def _mean_rows(
    existing: Tensor, count: int, noise_std: float, generator: torch.Generator
) -> Tensor:
    mean, spread = existing.mean(0), existing.std(0)
    noise = torch.randn((count, existing.shape[1]), generator=generator, dtype=torch.float64)
    return mean + noise * spread * noise_std


def _codebook_rows(existing: Tensor, codebook: Tensor, generator: torch.Generator) -> Tensor:
    codes = codebook.to(torch.float64)
    code_dim, hidden = codes.shape[1], existing.shape[1]
    gaussian = torch.randn((max(code_dim, hidden), min(code_dim, hidden)), generator=generator)
    orthonormal = torch.linalg.qr(gaussian.to(torch.float64)).Q
    # (d, H): orthonormal rows (an isometry) when d <= H, else a random orthogonal projection.
    basis = orthonormal.T if code_dim <= hidden else orthonormal
    projected = (codes - codes.mean(0)) @ basis
    scale = projected.pow(2).mean().sqrt().clamp_min(1e-12)
    return existing.mean(0) + projected / scale * existing.std(0)


def initial_rows(
    existing: Tensor,
    count: int,
    init: str,
    codebook: Tensor | None = None,
    noise_std: float = 0.02,
    seed: int = 0,
) -> Tensor:
    """``count`` new embedding rows matching ``existing`` (the old rows), by ``init``."""
    if init not in INIT_METHODS:
        raise ValueError(f"persona token init must be one of {INIT_METHODS}, got {init!r}")
    generator = torch.Generator().manual_seed(seed)
    old = existing.detach().to(torch.float64)
    if init == "mean":
        rows = _mean_rows(old, count, noise_std, generator)
    else:
        if codebook is None:
            raise ValueError("persona token init 'codebook' needs the VQ-VAE codebook")
        if codebook.shape[0] != count:
            raise ValueError(f"the codebook has {codebook.shape[0]} codes for {count} tokens")
        rows = _codebook_rows(old, codebook.detach().cpu(), generator)
    return rows.to(existing.dtype)


def add_persona_tokens(
    model: Any,
    tokenizer: Any,
    count: int,
    init: str = "mean",
    codebook: Tensor | None = None,
    noise_std: float = 0.02,
    seed: int = 0,
) -> PersonaTokens:
    """Add ``count`` persona tokens to ``tokenizer`` and ``model`` (in place) and initialise
    their embedding rows; returns their id range. Fails if the tokenizer has them already."""
    tokens = [persona_token(k) for k in range(count)]
    present = [t for t in tokens if t in tokenizer.get_vocab()]
    if present:
        raise ValueError(
            f"the base model already has persona tokens ({present[0]}, ...): start SFT from a "
            "model without them (sft.model)"
        )
    old_size = len(tokenizer)
    tokenizer.add_tokens(tokens, special_tokens=True)
    found = find_persona_tokens(tokenizer, count)
    tied = is_tied(model)
    rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(rows, found.stop), mean_resizing=False)
    if tied and not is_tied(model):
        raise RuntimeError("resizing the embeddings untied the input and output embeddings")
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        if not tied and model.get_output_embeddings() is not None:
            matrices.append(model.get_output_embeddings().weight)
        for offset, weight in enumerate(matrices):
            weight[found.first : found.stop] = initial_rows(
                weight[:old_size], count, init, codebook, noise_std, seed + offset
            )
    logger.info(
        "added %d persona tokens (ids %d-%d, %s init, %s embeddings)",
        count,
        found.first,
        found.stop - 1,
        init,
        "tied" if tied else "untied",
    )
    return found
