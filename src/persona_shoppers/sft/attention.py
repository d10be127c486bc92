"""Padding-free batches on CPU: a batch runs as one row of segments (the shared prefix once,
then each example), each example attending to the prefix and causally to itself, through
PyTorch's CPU flash-attention kernels (attention implementation ``persona_sft_segments``).

See docs/sft.md, "Batches and attention".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data import IGNORE

SEGMENT_ATTENTION = "persona_sft_segments"


@dataclass(frozen=True)
class Segments:
    """Where the examples lie in a flattened batch: ``prefix`` shared tokens first (each
    example attends to all of them), then each example's own tokens ``[start, stop)``."""

    prefix: int
    spans: tuple[tuple[int, int], ...]


def _flat_layout(batch: dict[str, Tensor]) -> tuple[int, Tensor]:
    """(shared prefix length, mask of the positions a flattened batch keeps after it)."""
    positions = batch["position_ids"]
    prefix = int(batch.get("shared_prefix", 0))
    columns = torch.arange(positions.shape[1], device=positions.device)
    return prefix, (columns < batch["lengths"][:, None]) & (positions >= prefix)


def flatten_like(batch: dict[str, Tensor], values: Tensor) -> Tensor:
    """Per-position ``values`` (B, L) of ``batch`` laid out as :func:`flatten_batch` lays out
    its tokens (1, T)."""
    prefix, keep = _flat_layout(batch)
    return torch.cat([values[0, :prefix], values[keep]])[None]


def flatten_batch(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Segments]:
    """(input_ids, position_ids, labels, segments) of ``batch`` as one padding-free row
    (1, T): the shared prefix (``batch["shared_prefix"]`` tokens, taken from the first
    example) once, then every example's tokens after it. ``batch["lengths"]`` holds each
    row's real (unpadded) length."""
    prefix = int(batch.get("shared_prefix", 0))
    flat = [flatten_like(batch, batch[key]) for key in ("input_ids", "position_ids", "labels")]
    if prefix and bool((flat[2][0, :prefix] != IGNORE).any()):
        raise ValueError("the shared prefix holds a labelled position")
    rest = flat[1][0, prefix:]
    starts = ((rest == prefix).nonzero()[:, 0] + prefix).tolist()
    stops = [*starts[1:], flat[0].shape[1]]
    return flat[0], flat[1], flat[2], Segments(prefix, tuple(zip(starts, stops, strict=True)))


def _flash(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, scale=scale
    )


def _flash_backward(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, causal: bool, scale
) -> tuple[Tensor, Tensor, Tensor]:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, causal, scale=scale
    )


# Up to this many query x key pairs an example's backward runs in plain batched matmuls
# (:func:`_matmul_backward`) rather than the flash kernel, whose backward has a large cost per
# call (docs/sft.md, "Batches and attention").
MATMUL_BACKWARD_PAIRS = 200_000


def _matmul_backward(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The causal attention backward of one example (q (1, H, n, D), k and v (1, KV, n, D))
    from its output and log-sum-exp, as the flash kernel computes it, in batched matmuls:
    scores and their gradient in float32, the products with them in the input dtype."""
    heads, n, dim = q.shape[1:]
    groups = k.shape[1]
    shape = (groups, heads // groups * n, dim)  # query heads grouped by their key head
    qg, g, o = q.reshape(shape), grad.reshape(shape), out.reshape(shape)
    probs = torch.bmm(qg.float(), k[0].float().transpose(1, 2))
    probs.mul_(scale).sub_(lse.reshape(*shape[:2], 1)).exp_()
    probs.view(groups, -1, n, n).tril_()  # causal: no key after the query
    grad_v = torch.bmm(probs.transpose(1, 2).to(v.dtype), g)
    grad_scores = torch.bmm(g, v[0].transpose(1, 2)).float()
    grad_scores.sub_((g.float() * o.float()).sum(-1, keepdim=True)).mul_(probs).mul_(scale)
    grad_scores = grad_scores.to(q.dtype)
    grad_q = torch.bmm(grad_scores, k[0]).reshape(q.shape)
    grad_k = torch.bmm(grad_scores.transpose(1, 2), qg)
    return grad_q, grad_k[None], grad_v[None]


class _SegmentAttention(torch.autograd.Function):
    """Attention of a flattened batch (query (1, H, T, D), key and value (1, KV, T, D),
    KV dividing H) along :class:`Segments`; returns (1, H, T, D). Kernel calls: the prefix
    on itself, each example on itself (causal), and all the examples' queries at once on
    the prefix (no mask), merged with the examples' own parts by log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value, segments: Segments, scale: float):  # type: ignore[override]
        p = segments.prefix
        out = torch.empty_like(query, memory_format=torch.contiguous_format)
        lse = query.new_empty(query.shape[:3], dtype=torch.float32)
        if p:
            out[:, :, :p], lse[:, :, :p] = _flash(
                query[:, :, :p], key[:, :, :p], value[:, :, :p], True, scale
            )
        for start, stop in segments.spans:
            span = slice(start, stop)
            out[:, :, span], lse[:, :, span] = _flash(
                query[:, :, span], key[:, :, span], value[:, :, span], True, scale
            )
        if p:  # every example's tokens on the prefix, then both parts merged
            rest = slice(p, None)
            shared, shared_lse = _flash(
                query[:, :, rest], key[:, :, :p], value[:, :, :p], False, scale
            )
            own_lse = lse[:, :, rest]
            both = torch.logaddexp(own_lse, shared_lse)
            merged = out[:, :, rest].float() * (own_lse - both).exp()[..., None]
            merged += shared.float() * (shared_lse - both).exp()[..., None]
            out[:, :, rest], lse[:, :, rest] = merged, both
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.segments, ctx.scale = segments, scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        query, key, value, out, lse = ctx.saved_tensors
        segments, scale = ctx.segments, ctx.scale
        p = segments.prefix
        grad = grad.contiguous()
        grad_q = torch.empty_like(query, memory_format=torch.contiguous_format)
        grad_k = torch.empty_like(key, memory_format=torch.contiguous_format)
        grad_v = torch.empty_like(value, memory_format=torch.contiguous_format)
        for start, stop in segments.spans:
            span = slice(start, stop)
            parts = [x[:, :, span] for x in (grad, query, key, value, out, lse)]
            if (stop - start) ** 2 <= MATMUL_BACKWARD_PAIRS:
                grads = _matmul_backward(*parts, scale)
            else:
                grads = _flash_backward(*parts, True, scale)
            grad_q[:, :, span], grad_k[:, :, span], grad_v[:, :, span] = grads
        if p:  # the prefix on itself, and every example's tokens on the prefix
            head, rest = slice(None, p), slice(p, None)

            def prefix_backward(queries: slice, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
                picked = [x[:, :, queries] for x in (grad, query)]
                picked += [x[:, :, head] for x in (key, value)]
                picked += [x[:, :, queries] for x in (out, lse)]
                return _flash_backward(*picked, causal, scale)

            grad_q[:, :, head], dk, dv = prefix_backward(head, causal=True)
            dq, dk_rest, dv_rest = prefix_backward(rest, causal=False)
            grad_q[:, :, rest] += dq
            grad_k[:, :, head] = dk.float() + dk_rest.float()
            grad_v[:, :, head] = dv.float() + dv_rest.float()
        return grad_q, grad_k, grad_v, None, None


def segment_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    persona_segments: Segments | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """A transformers attention function (``AttentionInterface``): the segments' attention
    when the forward pass got ``persona_segments``, else plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if persona_segments is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError("segment attention has no attention dropout")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    # one dtype for the kernel: autocast's, as SDPA would get (rotary embeddings may have
    # promoted the query and key to float32), else the value's
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else value.dtype
    query, key, value = (x.to(dtype) for x in (query, key, value))
    out = _SegmentAttention.apply(query, key, value, persona_segments, scale)
    return out.transpose(1, 2).contiguous(), None


def segment_attention_problem(model: Any, device: torch.device) -> str | None:
    """Why ``model`` cannot run flattened batches on ``device`` (None: it can)."""
    config = model.config
    if device.type != "cpu":
        return f"the CPU flash-attention kernels, not {device.type}"
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return "this PyTorch has no CPU flash-attention kernel"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", None):
        return f"the model uses {config._attn_implementation} attention"
    if getattr(config, "attention_dropout", 0.0):
        return "the model has attention dropout"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        return "the model has sliding-window attention"
    if getattr(config, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    return None


@contextlib.contextmanager
def use_segment_attention(model: Any) -> Iterator[None]:
    """Run ``model``'s attention through :func:`segment_attention` inside the block (it
    switches ``config._attn_implementation``, then switches it back)."""
    from transformers import AttentionInterface

    if SEGMENT_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = SEGMENT_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
