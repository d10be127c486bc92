from ...llm.conftest import tiny_model_dir  # noqa: F401 (a fixture)
