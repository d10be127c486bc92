"""llama.cpp's OpenAI-compatible server for the endpoint backend: its environment, its model
files and its process (docs/models_and_endpoints.md, "llama.cpp on a CPU").

The server runs in its own virtual environment (``llama-cpp-python[server]`` built from source,
about 7 minutes on 2 cores), created once per machine under :func:`server_home`, so a clean
clone of the project reuses it. ``python -m persona_shoppers.llm.serving setup`` creates it;
``python -m persona_shoppers.llm.serving serve --model llm=smollm2-135m-instruct --model
sft=data/06_models/sft_model`` serves the default model and the SFT model (converted to GGUF
once, next to its folder) until interrupted, and prints the parameters that point a run at it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from persona_shoppers.llm.models import KNOWN_MODELS, file_lock, fingerprint

logger = logging.getLogger(__name__)

LLAMA_CPP_VERSION = "0.3.36"
HOME_ENV = "PERSONA_SHOPPERS_LLAMA_CPP_HOME"
_COMPLETE = ".complete"
CONVERTER = "vendor/llama.cpp/convert_hf_to_gguf.py"
GGUF_PY = "vendor/llama.cpp/gguf-py"


class ServerError(RuntimeError):
    """The server's environment is missing, or the server did not start."""


def server_home() -> Path:
    """Where the server's environment lives: ``$PERSONA_SHOPPERS_LLAMA_CPP_HOME``, else the
    user's cache folder (one per llama-cpp-python version)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "persona-shoppers" / f"llama-cpp-{LLAMA_CPP_VERSION}"


def is_set_up(home: Path | None = None) -> bool:
    return ((home or server_home()) / _COMPLETE).is_file()


def require_setup(home: Path | None = None) -> Path:
    """The server's environment, or a :class:`ServerError` that says how to create it."""
    home = home or server_home()
    if not is_set_up(home):
        raise ServerError(
            f"llama.cpp's server environment is not set up at {home}: run "
            "`.venv/bin/python -m persona_shoppers.llm.serving setup` (about 7 minutes on "
            f"2 cores, once per machine; {HOME_ENV} chooses the folder)"
        )
    return home


def set_up(home: Path | None = None) -> Path:
    """Create the server's environment once (idempotent, safe against a parallel call): the
    source distribution of llama-cpp-python (its ``vendor/llama.cpp`` holds the GGUF
    converter), and a virtual environment with ``llama-cpp-python[server]`` built from it."""
    home = home or server_home()
    with file_lock(home.parent / f".{home.name}.lock"):
        if is_set_up(home):
            return home
        home.mkdir(parents=True, exist_ok=True)
        pip = ["-m", "pip", "--disable-pip-version-check", "--quiet"]
        sdist_dir = home / "sdist"
        logger.info("llama.cpp server: downloading llama-cpp-python %s", LLAMA_CPP_VERSION)
        subprocess.run(
            [sys.executable, *pip, "download", "--no-deps", "--no-binary", ":all:"]
            + ["--dest", str(sdist_dir), f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            check=True,
        )
        sdist = next(sdist_dir.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"))
        shutil.rmtree(home / "src", ignore_errors=True)
        with tarfile.open(sdist) as archive:
            top = archive.getnames()[0].split("/")[0]
            archive.extractall(home, filter="data")
        (home / top).rename(home / "src")
        venv = home / "venv"
        if not (venv / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        logger.info("llama.cpp server: building llama-cpp-python[server] (about 7 minutes)")
        subprocess.run(
            [str(venv / "bin" / "python"), *pip, "install", f"{sdist}[server]"], check=True
        )
        (home / _COMPLETE).write_text(LLAMA_CPP_VERSION)
    return home


def cxx_server(home: Path | None = None) -> Path:
    """llama.cpp's own C++ ``llama-server`` (parallel slots, continuous batching), built once
    from the vendored source with cmake and ninja (several minutes on 2 cores). It has no
    prompt log-probabilities (``echo``: ggml-org/llama.cpp#27174), so it can generate for
    agents but not score their actions; the benchmark compares its generation."""
    home = require_setup(home)
    binary = home / "cxx-build" / "bin" / "llama-server"
    with file_lock(home / ".cxx-build.lock"):
        if binary.is_file():
            return binary
        logger.info("building llama.cpp's llama-server in %s (several minutes)", binary.parent)
        source = home / "src" / "vendor" / "llama.cpp"
        options = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"]
        options += [
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
        ]
        build = home / "cxx-build"
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *options], check=True
        )
        jobs = str(os.cpu_count() or 1)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True
        )
    return binary


def convert_to_gguf(folder: str | Path, outtype: str = "f32", home: Path | None = None) -> Path:
    """A Hugging Face model folder as a GGUF file, written once per version of the folder's
    files (under the server's home, ``models/``) with llama.cpp's ``convert_hf_to_gguf.py``,
    run by this Python (it needs torch, transformers and sentencepiece). ``f32`` keeps the
    weights as the local backend runs them."""
    folder = Path(folder).resolve()
    home = require_setup(home)
    target = home / "models" / f"{folder.name}-{fingerprint(folder)}-{outtype}.gguf"
    with file_lock(target.with_suffix(".lock")):
        if target.is_file():
            return target
        logger.info("converting %s to %s", folder, target)
        partial = target.with_suffix(".partial")
        env = {**os.environ, "PYTHONPATH": str(home / "src" / GGUF_PY)}
        done = subprocess.run(
            [sys.executable, str(home / "src" / CONVERTER), str(folder)]
            + ["--outfile", str(partial), "--outtype", outtype],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ServerError(f"convert_hf_to_gguf.py failed on {folder}:\n{done.stderr[-2000:]}")
        partial.rename(target)
    return target


def model_file(model: str | Path, outtype: str = "f32", home: Path | None = None) -> Path:
    """The GGUF file that serves ``model``: a known name's own file (the weights the local
    backend dequantises), a ``.gguf`` path as it is, or a Hugging Face folder converted."""
    if str(model) in KNOWN_MODELS:
        return KNOWN_MODELS[str(model)].locate()
    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return path
    if (path / "config.json").is_file():
        return convert_to_gguf(path, outtype, home)
    raise FileNotFoundError(
        f"cannot serve {model!r}: not a known model ({sorted(KNOWN_MODELS)}), a .gguf file or a "
        "Hugging Face folder with config.json"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


ENGINES = ("lean", "llama-cpp-python")


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; a :class:`ServerError` if ``process`` exits first
    or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise ServerError(f"the server was not ready at {url} in {timeout_s:.0f} s")


class LlamaCppServer:
    """An OpenAI-compatible llama.cpp server on ``host:port`` with one or more models, each
    under its served name (``models``: name -> known model, ``.gguf`` or HF folder), as a
    context manager: started and ready on entry, stopped by its process id on exit.

    ``engine``: ``lean`` (:mod:`.llama_server`: llama-cpp-python's ``Llama`` behind the same
    API, prompt log-probabilities in numpy) or ``llama-cpp-python`` (its own server, whose
    ``echo`` costs seconds per request: docs/models_and_endpoints.md). Either answers one
    request at a time and reuses the previous request's prompt prefix: send a prompt's
    candidates one after another.
    """

    def __init__(
        self,
        models: Mapping[str, str | Path],
        port: int | None = None,
        host: str = "127.0.0.1",
        n_ctx: int = 2048,
        threads: int | None = None,
        startup_timeout_s: float = 120.0,
        log_path: str | Path | None = None,
        home: Path | None = None,
        engine: str = "lean",
    ) -> None:
        if not models:
            raise ValueError("LlamaCppServer needs at least one model")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.engine = engine
        self.home = require_setup(home)
        self.files = {name: model_file(model, home=self.home) for name, model in models.items()}
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = int(n_ctx)
        self.threads = int(threads or os.cpu_count() or 1)
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def config(self) -> dict:
        """The server's ``--config_file`` contents."""
        return {
            "host": self.host,
            "port": self.port,
            "models": [
                {
                    "model": str(path),
                    "model_alias": name,
                    "n_ctx": self.n_ctx,
                    "n_threads": self.threads,
                    "n_threads_batch": self.threads,
                    "logits_all": True,
                    "verbose": False,
                }
                for name, path in self.files.items()
            ],
        }

    def start(self) -> LlamaCppServer:
        self._workdir = tempfile.TemporaryDirectory(prefix="llama-server-")
        workdir = Path(self._workdir.name)
        config = workdir / "config.json"
        config.write_text(json.dumps(self.config()))
        log = self.log_path or workdir / "server.log"
        python = str(self.home / "venv" / "bin" / "python")
        if self.engine == "lean":
            command = [python, str(Path(__file__).with_name("llama_server.py")), "--config"]
        else:
            command = [python, "-m", "llama_cpp.server", "--config_file"]
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [*command, str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(log)
        logger.info("llama.cpp server ready at %s (%s)", self.base_url, ", ".join(self.files))
        return self

    def _wait_ready(self, log: Path) -> None:
        try:
            wait_until_ready(self.base_url + "/models", self.process, self.startup_timeout_s)
        except ServerError as exc:
            self.stop()
            raise ServerError(f"{exc}:\n{log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after 10 s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def endpoint_params(server: LlamaCppServer, condition_models: Mapping[str, str]) -> str:
    """The ``kedro run --params`` that point a run's conditions at ``server``."""
    models = ",".join(
        f"llm.endpoint.models.{kind}={name}" for kind, name in condition_models.items()
    )
    return f"llm.backend=endpoint,llm.endpoint.base_url={server.base_url},{models}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m persona_shoppers.llm.serving")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="create the server's environment (once per machine)")
    serve = commands.add_parser("serve", help="serve models until interrupted")
    serve.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="KIND=MODEL",
        help="a condition model kind (llm, sft, sft_single_stage) and what serves it: a known "
        "name, a .gguf file or an HF folder; repeatable",
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "setup":
        print(set_up())
        return
    pairs = dict(item.split("=", 1) for item in args.model)
    with LlamaCppServer(pairs, port=args.port, host=args.host, n_ctx=args.n_ctx) as server:
        print(f"serving {', '.join(pairs)} at {server.base_url}; run with:")
        print(f'  kedro run --params "{endpoint_params(server, {k: k for k in pairs})}"')
        with contextlib.suppress(KeyboardInterrupt):
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)


if __name__ == "__main__":
    main()
