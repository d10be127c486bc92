"""The agent tests use the LLM tests' tiny random Llama (SmolLM2's real tokenizer)."""

from ..llm.conftest import tiny_model_dir  # noqa: F401 (a fixture)
