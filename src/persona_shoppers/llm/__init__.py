"""The LLM layer every pipeline calls: one small batched interface, its backends, a cache.

>>> from persona_shoppers.llm import build_llm
>>> llm = build_llm({"backend": "local"})            # SmolLM2-135M-Instruct on CPU
>>> llm.generate([[{"role": "user", "content": "Say hi"}]], max_new_tokens=8)
>>> llm.choose([[{"role": "user", "content": "Red or blue?"}]], [["Red", "Blue"]])
>>> llm.generate_json(prompts, {"type": "object", "properties": {...}, "required": [...]})
>>> llm.perplexity(["red summer dress"])

``build_llm`` reads the ``llm:`` block of ``conf/base/parameters_llm.yml``; see ``docs/llm.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# the built-in backends register themselves on import (``local`` loads torch on first use)
from persona_shoppers.llm import endpoint, local  # noqa: F401
from persona_shoppers.llm.base import LLM, Choice, JsonResult, LLMError, Message, Prompt
from persona_shoppers.llm.cache import CachedLLM, ResponseCache
from persona_shoppers.llm.endpoint import EndpointLLM, kedro_credentials
from persona_shoppers.llm.json_schema import SchemaError, check_schema, is_valid, validate
from persona_shoppers.llm.models import resolve_model
from persona_shoppers.llm.registry import BACKENDS, get_backend, model_tag, register_backend

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "LLM",
    "CachedLLM",
    "Choice",
    "EndpointLLM",
    "JsonResult",
    "LLMError",
    "LocalLLM",
    "Message",
    "Prompt",
    "ResponseCache",
    "SchemaError",
    "build_llm",
    "check_schema",
    "kedro_credentials",
    "is_valid",
    "model_tag",
    "register_backend",
    "resolve_model",
    "validate",
]

DEFAULT_CACHE_DIR = "data/06_models/llm_cache"
_BUILT: dict[str, LLM] = {}
_BUILT_LOCK = threading.Lock()


def __getattr__(name: str) -> Any:  # LocalLLM imports torch and transformers: on first use
    if name == "LocalLLM":
        return local.LocalLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_llm(
    config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    reuse: bool = True,
) -> LLM:
    """The LLM described by ``config`` (the ``llm`` parameters block, or a dict holding it).

    ``backend`` names a registered backend (``local`` | ``endpoint``, see
    :mod:`~persona_shoppers.llm.registry`), which reads its own keys; ``cache`` (default true)
    and ``cache_dir`` set the response cache; ``credentials`` may hold the endpoint's
    ``api_key``. docs/llm.md ("Configuration") lists the keys and where API keys come from:
    keep them out of parameters files (kedro-mlflow logs parameters).

    With ``reuse`` (default), the same config returns the same instance within a process, so
    several nodes of one run share one loaded model.
    """
    config = dict(config or {})
    if isinstance(config.get("llm"), Mapping):
        config = dict(config["llm"])
    secret = hashlib.sha256(json.dumps(credentials or {}, sort_keys=True, default=str).encode())
    key = json.dumps([config, secret.hexdigest()], sort_keys=True, default=str)
    with _BUILT_LOCK:
        if reuse and key in _BUILT:
            return _BUILT[key]
        llm = _build(config, credentials)
        if reuse:
            _BUILT[key] = llm
    return llm


def _build(config: dict[str, Any], credentials: Mapping[str, Any] | None) -> LLM:
    llm = get_backend(config).build(config, credentials)
    if config.get("cache", True):
        path = Path(config.get("cache_dir") or DEFAULT_CACHE_DIR)
        llm = CachedLLM(llm, path)
        logger.info("LLM %s with response cache %s", llm.name, llm.cache.path)
    return llm
