"""Grouped-query attention under a mask left to PyTorch's sdpa kernel, for the local backend.

Registered with transformers as the attention function ``persona_sdpa_gqa``; see docs/llm.md.
"""

from __future__ import annotations

from typing import Any

import torch

GQA_SDPA = "persona_sdpa_gqa"


def sdpa_gqa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, but grouped-query attention under a mask is left to the
    kernel (``enable_gqa``): transformers repeats the key/value heads instead, a copy of the
    whole KV in every layer of a multi-token pass. Single-token passes and the cases it does
    not cover go to transformers."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = getattr(module, "num_key_value_groups", 1) > 1
    if query.shape[2] == 1 or not grouped or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    # no mask: transformers only omits it when every query sees every earlier key
    causal = attention_mask is None and (
        is_causal if is_causal is not None else getattr(module, "is_causal", True)
    )
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def use_sdpa_gqa(model: Any) -> None:
    """Run ``model``'s sdpa attention through :func:`sdpa_gqa` (CPU only: on a GPU a mask
    with ``enable_gqa`` can push sdpa off its fused kernels)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if model.config._attn_implementation != "sdpa":
        return
    AttentionInterface.register(GQA_SDPA, sdpa_gqa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)
