#!/usr/bin/env bash
# Install (once) and run the Kedro project; extra arguments go to `kedro run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/kedro run "$@"
