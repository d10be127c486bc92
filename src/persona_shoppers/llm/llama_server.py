"""An OpenAI-compatible HTTP server over llama.cpp (llama-cpp-python's ``Llama``), run by the
server's own environment (:mod:`.serving` starts it; it imports nothing of this project).

It serves what the endpoint backend calls: ``/v1/models``, ``/v1/chat/completions`` and
``/v1/completions`` (both answered by ``Llama`` itself, JSON schemas through its grammars),
except that prompt log-probabilities (``echo`` with ``logprobs``) are computed here, from the
logits of every prompt token in one numpy pass, reusing the previous request's prefix.
llama-cpp-python's own server sorts the whole vocabulary in Python for every prompt token
(seconds per request) and leaves out every token equal to BOS (SmolLM2's ``<|im_start|>``);
docs/models_and_endpoints.md gives the figures. One request runs at a time (a single-threaded
HTTP server: a thread per request cost more than the scoring of a short continuation).

    python llama_server.py --config config.json   # {"host", "port", "models": [{...}]}

Each model entry: ``model`` (a GGUF path), ``model_alias`` (its served name), ``n_ctx``,
``n_threads``; models load on first use and stay loaded.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np

CHAT_FIELDS = ("max_tokens", "temperature", "seed", "stop", "logprobs", "top_logprobs")
COMPLETION_FIELDS = ("max_tokens", "temperature", "seed", "stop", "logprobs")


class BadRequest(ValueError):
    """A request this server cannot answer (HTTP 400)."""


class Models:
    """The served models by name, each loaded on first use."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = {entry["model_alias"]: entry for entry in entries}
        self.loaded: dict[str, Scorer] = {}

    def get(self, name: str | None) -> tuple[str, Scorer]:
        if name not in self.entries:
            if name is None and len(self.entries) == 1:
                name = next(iter(self.entries))
            else:
                raise BadRequest(f"unknown model {name!r}; served: {sorted(self.entries)}")
        if name not in self.loaded:
            from llama_cpp import Llama

            entry = self.entries[name]
            threads = entry.get("n_threads")
            llm = Llama(
                model_path=entry["model"],
                n_ctx=int(entry.get("n_ctx", 2048)),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=True,
                verbose=False,
            )
            self.loaded[name] = Scorer(llm)
        return name, self.loaded[name]


def _log_normalisers(rows: np.ndarray) -> np.ndarray:
    top = rows.max(axis=1)
    return top + np.log(np.exp(rows - top[:, None]).sum(axis=1))


class Scorer:
    """Prompt log-probabilities on one model: the KV cache, the logits and the rows'
    log-normalisers of the longest prefix shared with the previous call are reused."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.normalisers = np.zeros(llm.n_ctx(), dtype=np.float64)
        self.valid = 0  # rows whose normaliser belongs to the current tokens
        self.pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """The text of one token (memoised)."""
        if token not in self.pieces:
            text = self.llm.detokenize([token], special=True)
            self.pieces[token] = text.decode("utf-8", errors="replace")
        return self.pieces[token]

    def forget(self) -> None:
        """After the model ran other tokens (a completion): no normaliser is known valid."""
        self.valid = 0

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        """The log-probability of each of ``tokens`` (after the first) given those before it."""
        llm = self.llm
        shared = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens, strict=False):
            if a != b:
                break
            shared += 1
        llm.n_tokens = min(shared, len(tokens) - 1)  # the last token's logits are always fresh
        fresh = min(llm.n_tokens, self.valid)
        llm.eval(tokens[llm.n_tokens :])
        rows = llm.scores[: len(tokens) - 1]
        self.normalisers[fresh : len(tokens) - 1] = _log_normalisers(rows[fresh:])
        self.valid = len(tokens) - 1
        targets = np.asarray(tokens[1:])
        return rows[np.arange(len(targets)), targets] - self.normalisers[: len(targets)]

    def next_token(self, tokens: list[int]) -> tuple[int, float]:
        """The greedy next token after ``tokens`` (just scored or extended) and its
        log-probability."""
        row = self.llm.scores[len(tokens) - 1]
        best = int(np.argmax(row))
        return best, float(row[best] - _log_normalisers(row[None])[0])


def echo_completion(name: str, scorer: Scorer, body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/completions`` with ``echo``: the prompt's token log-probabilities, then up to
    ``max_tokens`` greedy tokens (with theirs)."""
    if float(body.get("temperature", 1.0)) > 0 and int(body.get("max_tokens", 16)) > 0:
        raise BadRequest("echo with sampled tokens is not supported: temperature 0 or max_tokens 0")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("echo needs one non-empty prompt string")
    llm = scorer.llm
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    n_prompt = len(tokens)
    values = [None, *scorer.logprobs(tokens).tolist()]
    for i in range(int(body.get("max_tokens", 16))):
        if len(tokens) >= llm.n_ctx():
            break
        if i:  # the token before is generated: run it (the first is the prompt's last)
            llm.eval(tokens[-1:])
        best, logprob = scorer.next_token(tokens)
        if best == llm.token_eos():
            break
        values.append(logprob)
        tokens.append(best)
    pieces = [scorer.piece(t) for t in tokens]
    offsets = np.cumsum([0, *(len(p) for p in pieces[:-1])]).tolist()
    text = "".join(pieces[n_prompt:])
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "text": prompt + text,
                "logprobs": {"tokens": pieces, "token_logprobs": values, "text_offset": offsets},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": n_prompt,
            "completion_tokens": len(tokens) - n_prompt,
            "total_tokens": len(tokens),
        },
    }


def chat_completion(llm: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/chat/completions`` by ``Llama.create_chat_completion``; a ``json_schema``
    response format becomes llama-cpp-python's ``json_object`` with that schema."""
    options = {k: body[k] for k in CHAT_FIELDS if k in body}
    fmt = body.get("response_format")
    if fmt and fmt.get("type") == "json_schema":
        options["response_format"] = {
            "type": "json_object",
            "schema": (fmt.get("json_schema") or {}).get("schema", {}),
        }
    elif fmt:
        options["response_format"] = fmt
    return llm.create_chat_completion(messages=body["messages"], **options)


def answer(models: Models, path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path not in ("/v1/chat/completions", "/v1/completions"):
        raise KeyError(path)
    name, scorer = models.get(body.get("model"))
    if path == "/v1/completions" and body.get("echo") and body.get("logprobs") is not None:
        return echo_completion(name, scorer, body)
    scorer.forget()
    if path == "/v1/chat/completions":
        return chat_completion(scorer.llm, body)
    options = {k: body[k] for k in COMPLETION_FIELDS if k in body}
    return scorer.llm.create_completion(prompt=body["prompt"], **options)


def serve(config: dict[str, Any]) -> None:
    models = Models(config["models"])

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # headers and body leave at once, not a delayed ACK later

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.rstrip("/") == "/v1/models":
                listed = [{"id": name, "object": "model"} for name in models.entries]
                self._send(200, {"object": "list", "data": listed})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                self._send(200, answer(models, self.path.rstrip("/"), body))
            except KeyError as exc:
                self._send(404, {"error": {"message": f"no route {exc}"}})
            except (BadRequest, ValueError, TypeError) as exc:
                self._send(400, {"error": {"message": str(exc)}})
            except Exception as exc:  # the client sees why, the server goes on
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})

    class Server(HTTPServer):
        request_queue_size = 256  # clients with many requests in flight wait, not refused

    server = Server((config.get("host", "127.0.0.1"), int(config["port"])), Handler)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with open(args.config) as handle:
        serve(json.load(handle))


if __name__ == "__main__":
    main()
