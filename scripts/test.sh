#!/usr/bin/env bash
# Install (once) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MPLCONFIGDIR="$PWD/.cache/matplotlib"
# llama.cpp's server for tests/llm/test_served.py: built once per machine (about 7 minutes).
.venv/bin/python -m persona_shoppers.llm.serving setup >/dev/null
exec .venv/bin/python -m pytest "$@"
