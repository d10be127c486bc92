"""The LLM layer every pipeline calls: one small batched interface, two backends, a cache.

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
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from persona_shoppers.llm.base import LLM, Choice, JsonResult, LLMError, Message, Prompt
from persona_shoppers.llm.cache import CachedLLM, ResponseCache
from persona_shoppers.llm.json_schema import SchemaError, check_schema, is_valid, validate
from persona_shoppers.llm.models import DEFAULT_HF_CACHE_DIR, DEFAULT_MODEL, resolve_model
from persona_shoppers.numerics import AUTO

logger = logging.getLogger(__name__)

__all__ = [
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
    "resolve_model",
    "validate",
]

DEFAULT_CACHE_DIR = "data/06_models/llm_cache"
_BUILT: dict[str, LLM] = {}
_BUILT_LOCK = threading.Lock()


def __getattr__(name: str) -> Any:  # the backends import torch / transformers lazily
    if name == "LocalLLM":
        from persona_shoppers.llm.local import LocalLLM

        return LocalLLM
    if name == "EndpointLLM":
        from persona_shoppers.llm.endpoint import EndpointLLM

        return EndpointLLM
    raise AttributeError(name)


def kedro_credentials(name: str = "llm_endpoint", conf_source: str | Path = "conf") -> dict:
    """The ``name`` entry of Kedro's credentials (``conf/local/credentials.yml``), or {}."""
    try:
        from kedro.config import OmegaConfigLoader

        with warnings.catch_warnings():  # omegaconf deprecations raised inside kedro
            warnings.simplefilter("ignore")
            loader = OmegaConfigLoader(
                conf_source=str(conf_source), base_env="base", default_run_env="local"
            )
            entry = loader["credentials"].get(name) or {}
    except Exception as exc:  # no conf folder, no kedro, unreadable yaml: no credentials
        logger.debug("no Kedro credentials %r: %s", name, exc)
        return {}
    return dict(entry) if isinstance(entry, Mapping) else {}


def _api_key(config: Mapping[str, Any], credentials: Mapping[str, Any] | None) -> str | None:
    endpoint = config.get("endpoint") or {}
    for source in (config, endpoint, credentials or {}):
        if source.get("api_key"):
            return str(source["api_key"])
    env = endpoint.get("api_key_env", "OPENAI_API_KEY")
    if env and os.environ.get(env):
        return None  # EndpointLLM reads the environment variable itself
    name = endpoint.get("credentials", "llm_endpoint")
    if name:
        found = kedro_credentials(name, config.get("conf_source", "conf")).get("api_key")
        return str(found) if found else None
    return None


def build_llm(
    config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    reuse: bool = True,
) -> LLM:
    """The LLM described by ``config`` (the ``llm:`` parameters block, or a dict holding it).

    Keys: ``backend`` (``local`` | ``endpoint``), ``model``, ``dtype``, ``batch_size``,
    ``device``, ``hf_cache_dir``, ``token_budget``, ``prefix_cache_mb``,
    ``forward_cost_tokens`` (local);
    ``endpoint: {base_url, model,
    api_key_env, timeout_s, max_retries, backoff_s, concurrency, json_attempts,
    strict_schema}``; ``cache`` (bool, default true) and ``cache_dir`` for the response cache.
    The API key comes from ``config["api_key"]``, ``config["endpoint"]["api_key"]``,
    ``credentials["api_key"]``, the environment variable ``endpoint.api_key_env`` (default
    ``OPENAI_API_KEY``), or else Kedro's credentials entry ``endpoint.credentials`` (default
    ``llm_endpoint``) in ``conf/local/credentials.yml``. Keep keys out of parameters files:
    kedro-mlflow logs parameters.

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
    backend = str(config.get("backend", "local")).lower()
    llm: LLM
    if backend == "local":
        from persona_shoppers.llm.local import LocalLLM

        llm = LocalLLM(
            model=config.get("model", DEFAULT_MODEL),
            dtype=config.get("dtype", AUTO),
            batch_size=int(config.get("batch_size", 8)),
            device=config.get("device", "cpu"),
            hf_cache_dir=config.get("hf_cache_dir", DEFAULT_HF_CACHE_DIR),
            token_budget=int(config.get("token_budget", 16384)),
            max_length=config.get("max_length"),
            prefix_cache_mb=float(config.get("prefix_cache_mb", 512)),
            forward_cost_tokens=float(config.get("forward_cost_tokens", 64)),
        )
    elif backend == "endpoint":
        from persona_shoppers.llm.endpoint import EndpointLLM

        endpoint = dict(config.get("endpoint") or {})
        if not endpoint.get("base_url"):
            raise ValueError("llm.endpoint.base_url is required for backend: endpoint")
        llm = EndpointLLM(
            base_url=endpoint["base_url"],
            model=endpoint.get("model") or config.get("model") or "default",
            api_key=_api_key(config, credentials),
            api_key_env=endpoint.get("api_key_env", "OPENAI_API_KEY"),
            timeout_s=float(endpoint.get("timeout_s", 30)),
            max_retries=int(endpoint.get("max_retries", 3)),
            backoff_s=float(endpoint.get("backoff_s", 0.5)),
            concurrency=int(endpoint.get("concurrency", 4)),
            json_attempts=int(endpoint.get("json_attempts", 3)),
            strict_schema=bool(endpoint.get("strict_schema", False)),
            extra_body=endpoint.get("extra_body"),
        )
    else:
        raise ValueError(f"llm.backend must be 'local' or 'endpoint', got {backend!r}")
    if config.get("cache", True):
        path = Path(config.get("cache_dir") or DEFAULT_CACHE_DIR)
        llm = CachedLLM(llm, path)
        logger.info("LLM %s with response cache %s", llm.name, llm.cache.path)
    return llm
