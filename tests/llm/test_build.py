"""The factory from parameters, and the project's parameters file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from persona_shoppers.llm import CachedLLM, build_llm, registry
from persona_shoppers.llm.endpoint import EndpointLLM
from persona_shoppers.llm.local import LocalLLM
from persona_shoppers.llm.models import DEFAULT_MODEL

from .test_base import PROMPT, RecordingLLM

ROOT = Path(__file__).resolve().parents[2]


def test_parameters_file_has_an_llm_block():
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_llm.yml").read_text())
    llm = params["llm"]
    assert llm["backend"] == "local" and llm["model"] == "smollm2-135m-instruct"
    assert llm["dtype"] == "auto"
    assert {"base_url", "model", "api_key_env", "timeout_s", "max_retries", "concurrency"} <= set(
        llm["endpoint"]
    )


def test_local_backend_from_config(tiny_model_dir, tmp_path):
    config = {
        "llm": {
            "backend": "local",
            "model": str(tiny_model_dir),
            "dtype": "float32",
            "batch_size": 2,
            "cache_dir": str(tmp_path / "cache"),
        }
    }
    llm = build_llm(config)
    assert isinstance(llm, CachedLLM) and isinstance(llm.llm, LocalLLM)
    assert llm.llm.batch_size == 2 and llm.cache.path.parent == tmp_path / "cache"
    assert build_llm(config) is llm  # one loaded model per config and process
    assert build_llm(config, reuse=False) is not llm
    bare = build_llm({**config["llm"], "cache": False}, reuse=False)
    assert isinstance(bare, LocalLLM)


def test_endpoint_backend_from_config_and_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = {
        "backend": "endpoint",
        "cache": False,
        "conf_source": str(tmp_path / "no-conf"),
        "endpoint": {
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "timeout_s": 5,
            "max_retries": 1,
            "concurrency": 2,
            "api_key_env": "MY_KEY",
        },
    }
    llm = build_llm(config, reuse=False)
    assert isinstance(llm, EndpointLLM) and llm.api_key is None
    assert (llm.timeout_s, llm.max_retries, llm.concurrency) == (5.0, 1, 2)
    monkeypatch.setenv("MY_KEY", "from-env")
    assert build_llm(config, reuse=False).api_key == "from-env"
    creds = {"api_key": "from-credentials"}
    assert build_llm(config, credentials=creds, reuse=False).api_key == "from-credentials"
    assert build_llm({**config, "api_key": "inline"}, reuse=False).api_key == "inline"


def test_bad_configs_are_clear():
    with pytest.raises(ValueError, match=r"one of \['endpoint', 'local'\], got 'magic'"):
        build_llm({"backend": "magic"}, reuse=False)
    with pytest.raises(ValueError, match="base_url"):
        build_llm({"backend": "endpoint", "endpoint": {}}, reuse=False)
    with pytest.raises(ValueError, match="dtype"):
        LocalLLM("whatever", dtype="int3")


def test_api_key_from_kedro_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "local" / "credentials.yml").write_text(
        "llm_endpoint:\n  api_key: from-kedro\n"
    )
    config = {
        "backend": "endpoint",
        "cache": False,
        "conf_source": str(tmp_path / "conf"),
        "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
    }
    assert build_llm(config, reuse=False).api_key == "from-kedro"
    monkeypatch.setenv("OPENAI_API_KEY", "env-wins")
    assert build_llm(config, reuse=False).api_key == "env-wins"


def test_a_registered_backend_is_built_by_build_llm(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    built = []

    @registry.register_backend("recording", model_tag=lambda config: f"rec {config['model']}")
    def build(config, credentials):
        built.append((config["model"], credentials))
        return RecordingLLM()

    config = {"backend": "Recording", "model": "m", "cache_dir": str(tmp_path)}
    llm = build_llm(config, credentials={"api_key": "k"}, reuse=False)
    assert isinstance(llm, CachedLLM) and isinstance(llm.llm, RecordingLLM)
    assert built == [("m", {"api_key": "k"})]
    assert llm.generate([PROMPT]) == ["hi"] and llm.llm.calls[0][0] == "generate"
    assert registry.model_tag(config) == "rec m"
    with pytest.raises(ValueError, match="'recording' is registered twice"):
        registry.register_backend("recording", model_tag=str)(build)
    with pytest.raises(ValueError, match=r"one of \['endpoint', 'local', 'recording'\]"):
        build_llm({"backend": "magic"}, reuse=False)


def test_model_tag_of_an_unknown_backend_is_its_model():
    assert registry.model_tag({"backend": "magic", "model": "x"}) == "x"
    assert registry.model_tag({}) == DEFAULT_MODEL
