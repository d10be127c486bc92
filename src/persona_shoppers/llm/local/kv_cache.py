"""A KV cache written in place: full-attention layers get their room allocated up front.

transformers' dynamic layers concatenate instead (a copy of the whole cache per layer and
pass). See docs/llm.md ("How it is fast").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A full-attention KV cache layer with room allocated up front: a pass writes its keys
    and values in place and attention reads a view of the filled part (transformers'
    ``DynamicLayer`` concatenates instead). Past the room it grows (doubling)."""

    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int):  # noqa: D107
        # no super().__init__(): keys and values are views of the buffers, not attributes
        self._keys, self._values, self.filled = keys, values, filled
        self.device, self.is_initialized = keys.device, True

    @property
    def keys(self) -> torch.Tensor:
        return self._keys[:, :, : self.filled]

    @property
    def values(self) -> torch.Tensor:
        return self._values[:, :, : self.filled]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.filled + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            grown = max(end, 2 * self._keys.shape[-2])
            self._keys, self._values = (
                torch.cat([x, x.new_zeros((*x.shape[:2], grown - x.shape[2], x.shape[3]))], 2)
                for x in (self._keys, self._values)
            )
        self._keys[:, :, self.filled : end] = key_states
        self._values[:, :, self.filled : end] = value_states
        self.filled = end
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0

    def get_max_length(self) -> int:
        return -1


def preallocated_cache(
    config: Any,
    rows: int,
    width: int,
    capacity: int,
    entries: Sequence[Any],
    dtype: torch.dtype,
    device: torch.device,
) -> Any:
    """A KV cache of ``rows`` rows for a model of ``config``, holding each row's cached prefix
    entry (a (keys, values) pair per layer, or None) right-aligned in its first ``width``
    positions. Full-attention layers get room for ``capacity`` positions, filled in place as
    passes add keys."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if len(cache.layers) != config.num_hidden_layers:
        raise ValueError(f"{config.model_type}: cannot lay out its KV cache")
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dim = getattr(config, "head_dim", None) or (config.hidden_size // config.num_attention_heads)
    for i, layer in enumerate(cache.layers):
        exact = type(layer) is DynamicLayer
        size = capacity if exact else width
        # the room past ``width`` is written before it is read; the padding must be finite
        keys = torch.empty((rows, heads, size, dim), dtype=dtype, device=device)
        values = torch.empty_like(keys)
        keys[:, :, :width] = 0
        values[:, :, :width] = 0
        for r, entry in enumerate(entries):
            if entry is not None:
                k, v = entry[i]
                keys[r, :, width - k.shape[1] : width] = k
                values[r, :, width - v.shape[1] : width] = v
        if exact:
            cache.layers[i] = PreallocatedLayer(keys, values, width)
        elif width:
            layer.update(keys, values)
    return cache
