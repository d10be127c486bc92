"""The local backend (``backend: local``): a Hugging Face causal LM run in-process (docs/llm.md).

:class:`~.backend.LocalLLM` is the model; the jobs it leans on have their own modules:
``batching`` (rows per forward pass), ``prefix_cache`` (prompt KV caches kept across calls),
``kv_cache`` (a KV cache written in place), ``trie`` (candidates that start alike, fed once)
and ``attention`` (grouped-query attention on a CPU). This module imports no torch, so the
backend registers without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persona_shoppers.llm.base import LLM
from persona_shoppers.llm.registry import as_given, configured_model, parameters, register_backend

# The ``llm`` parameters LocalLLM takes, and how each is read; its defaults are LocalLLM's.
PARAMETERS = {
    "model": as_given,
    "dtype": as_given,
    "batch_size": int,
    "device": as_given,
    "hf_cache_dir": as_given,
    "token_budget": int,
    "max_length": as_given,
    "prefix_cache_mb": float,
    "forward_cost_tokens": float,
}


@register_backend("local", model_tag=configured_model)
def build_local(config: Mapping[str, Any], credentials: Mapping[str, Any] | None = None) -> LLM:
    """A :class:`~.backend.LocalLLM` from the ``llm`` parameters (no credentials needed)."""
    from persona_shoppers.llm.local.backend import LocalLLM

    return LocalLLM(**parameters(config, PARAMETERS))


def __getattr__(name: str) -> Any:  # LocalLLM imports torch and transformers: on first use
    if name == "LocalLLM":
        from persona_shoppers.llm.local.backend import LocalLLM

        return LocalLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
