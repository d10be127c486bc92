"""Persona-token SFT (SimPersona 2.3): persona tokens in the vocabulary, assistant-only
training data, a Lightning module whose stage 1 trains the persona rows alone and whose
stage 2 trains the model (full or LoRA), and a Kedro dataset for the resulting HF folder.

See ``docs/sft.md``.
"""

from .data import (
    IGNORE,
    Example,
    SFTDataModule,
    TokenizeReport,
    tokenize_example,
    tokenize_examples,
)
from .module import PersonaSFTModule, StepMetricHistory
from .tokens import PersonaTokens, add_persona_tokens, find_persona_tokens, persona_token
from .training import train_stage

__all__ = [
    "IGNORE",
    "Example",
    "PersonaSFTModule",
    "PersonaTokens",
    "SFTDataModule",
    "StepMetricHistory",
    "TokenizeReport",
    "add_persona_tokens",
    "find_persona_tokens",
    "persona_token",
    "tokenize_example",
    "tokenize_examples",
    "train_stage",
]
