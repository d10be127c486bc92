from ...sft.conftest import base_tokenizer, tiny_base_dir  # noqa: F401 (fixtures)
