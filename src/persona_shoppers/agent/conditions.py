"""What a condition runs on: its LLM (the default model or an SFT model) and its persona text.

Simulation and alignment name models the same way: ``llm`` is the default model of the
``llm`` parameters; ``sft`` the two-stage persona-token model; ``sft_single_stage`` the
single-stage ablation (SimPersona appendix F).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from ..llm import build_llm
from ..llm.base import LLM

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
    config = {**llm_params, "cache": cache}
    if kind != "llm":
        if models.get(kind) is None:
            raise ValueError(f"condition model {kind!r} needs its model folder (not loaded)")
        config["model"] = str(models[kind].folder)
    return build_llm(config)
