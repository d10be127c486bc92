"""A Kedro dataset for Hugging Face models: a (model, tokenizer) pair in one folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from kedro.io import AbstractDataset, DatasetError


class ModelAndTokenizer(NamedTuple):
    """A causal LM with its tokenizer (persona tokens and chat template included)."""

    model: Any
    tokenizer: Any


class SavedModel(ModelAndTokenizer):
    """A :class:`ModelAndTokenizer` loaded from a folder; ``folder`` says where, so that the
    LLM layer (``build_llm({"model": str(folder)})``) can serve the same model."""

    folder: Path


def _saved(model: Any, tokenizer: Any, folder: Path) -> SavedModel:
    loaded = SavedModel(model, tokenizer)
    loaded.folder = folder
    return loaded


def save_model_folder(model: Any, tokenizer: Any, folder: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer into ``folder``, atomically: written to a
    temporary sibling folder, then renamed over the old one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the model folder is not
    old = folder.parent / f".{folder.name}.old"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


class HuggingFaceModelDataset(AbstractDataset[ModelAndTokenizer, ModelAndTokenizer]):
    """A causal LM and its tokenizer saved with ``save_pretrained`` in one folder, the format
    ``persona_shoppers.llm.LocalLLM`` (and any Hugging Face tool) loads.

    Saving takes a ``(model, tokenizer)`` pair and writes atomically (a temporary folder,
    then a rename), so an interrupted save never leaves half a model. Loading returns a
    :class:`ModelAndTokenizer`; ``load_args`` go to ``AutoModelForCausalLM.from_pretrained``
    (``dtype`` as a string, e.g. ``bfloat16``).

    ```yaml
    sft_model:
      type: persona_shoppers.datasets.HuggingFaceModelDataset
      filepath: data/06_models/sft_model
    ```
    """

    def __init__(
        self,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = PurePosixPath(filepath)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> ModelAndTokenizer:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(self._path)
        if not (folder / "config.json").is_file():
            raise DatasetError(f"no Hugging Face model in {folder} (config.json missing)")
        args = dict(self._load_args)
        if isinstance(args.get("dtype"), str):
            args["dtype"] = getattr(torch, args["dtype"])
        model = AutoModelForCausalLM.from_pretrained(folder, **args)
        return _saved(model.eval(), AutoTokenizer.from_pretrained(folder), folder)

    def save(self, data: tuple[Any, Any]) -> None:
        try:
            model, tokenizer = data
        except (TypeError, ValueError) as exc:
            raise DatasetError("HuggingFaceModelDataset saves a (model, tokenizer) pair") from exc
        save_model_folder(model, tokenizer, Path(self._path))

    def _exists(self) -> bool:
        return (Path(self._path) / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path), "load_args": self._load_args}
