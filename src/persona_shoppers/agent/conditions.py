"""What a condition runs on: its LLM (the default model or an SFT model) and its persona text.

Simulation and alignment name models the same way: ``llm`` is the default model of the
``llm`` parameters; ``sft`` the two-stage persona-token model; ``sft_single_stage`` the
single-stage ablation (SimPersona appendix F).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..llm import build_llm
from ..llm.base import LLM
from ..llm.registry import backend_name

MODEL_KINDS = ("llm", "sft", "sft_single_stage")


def as_dict(value: Any) -> dict[str, Any]:
    """A text persona field as stored in json lines: a dict, or its Python repr."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.startswith("{"):
        return ast.literal_eval(value)
    return {}


def condition_llm(
    kind: str, models: Mapping[str, Any], llm_params: Mapping[str, Any], cache: bool = False
) -> LLM:
    """The LLM of a condition: ``llm`` (the ``llm`` parameters' model) or an SFT model folder
    (``models[kind].folder``, as the HuggingFaceModelDataset loads it)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"condition model must be one of {MODEL_KINDS}, got {kind!r}")
    folder = None
    if kind != "llm":
        if models.get(kind) is None:
            raise ValueError(f"condition model {kind!r} needs its model folder (not loaded)")
        folder = models[kind].folder
    return model_llm(kind, folder, llm_params, cache)


def model_llm(
    kind: str, folder: str | Path | None, llm_params: Mapping[str, Any], cache: bool = False
) -> LLM:
    """The LLM that runs ``kind``'s model: from ``folder`` (None: ``llm.model``) with the local
    backend; with an endpoint, the model ``llm.endpoint.models[kind]`` names (a served name,
    or ``{base_url, model}`` on another server; the ``llm`` kind falls back to
    ``llm.endpoint.model``), its prompts rendered by ``folder``'s chat template
    (docs/models_and_endpoints.md, "Base and SFT models served side by side")."""
    config: dict[str, Any] = {**llm_params, "cache": cache}
    if folder is not None:
        config["model"] = str(folder)
    if backend_name(config) == "endpoint":
        endpoint = dict(config.get("endpoint") or {})
        served = (endpoint.get("models") or {}).get(kind)
        if served is None and kind == "llm":
            served = endpoint.get("model")
        if not served:
            raise ValueError(
                f"llm.endpoint.models has no served name for the {kind!r} model: serve it "
                "(python -m persona_shoppers.llm.serving serve --model "
                f"{kind}=<folder>) and set llm.endpoint.models.{kind}"
            )
        # a served name on endpoint.base_url, or {base_url, model} on a server of its own
        where = dict(served) if isinstance(served, Mapping) else {"model": served}
        config["endpoint"] = {**endpoint, **where}
        if folder is not None:  # its tokenizer has the persona tokens the served model has
            config["endpoint"]["tokenizer"] = str(folder)
    return build_llm(config)
