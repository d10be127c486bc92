"""Fixtures for SFT: tiny random Llamas over SmolLM2's real tokenizer, with persona tokens."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from persona_shoppers.sft.data import conversations

from ..llm.conftest import _tokenizer, tiny_llama
from ._traces import synthetic_traces

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NUM_TOKENS = 16


@pytest.fixture(scope="session")
def base_tokenizer() -> Any:
    return _tokenizer()


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory, base_tokenizer: Any) -> Path:
    """The tiny Llama without persona tokens, saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-sft-base")
    tiny_llama(base_tokenizer).save_pretrained(folder)
    base_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def persona_model(base_tokenizer: Any) -> tuple[Any, Any, Any]:
    """(model, tokenizer, PersonaTokens): a fresh tiny Llama with 16 persona tokens."""
    from persona_shoppers.sft.tokens import add_persona_tokens

    tokenizer = copy.deepcopy(base_tokenizer)
    model = tiny_llama(tokenizer)
    persona = add_persona_tokens(model, tokenizer, NUM_TOKENS, init="mean")
    return model, tokenizer, persona


@pytest.fixture(scope="session")
def traces() -> list[list[dict]]:
    """24 short training conversations (stage-1 format)."""
    frame = synthetic_traces(sessions=12, steps=2, num_tokens=NUM_TOKENS, validation_share=0)
    return conversations(frame)
