"""Time the default `kedro run`, pipeline by pipeline, as on a fresh clone.

The committed tree (HEAD) is cloned into a temporary folder, so nothing a previous run left
behind (converted models, LLM response cache, embedding cache, outputs, mlflow.db) helps;
the project's .venv is reused (installing is not part of a run). Each stage of
`pipeline_registry.STAGES` runs as `kedro run --pipelines=<stage>` in order, which is what a
plain `kedro run` executes.

    .venv/bin/python benchmarks/bench_default_run.py [--keep] [--stages a,b,...]

Prints a table and writes benchmarks/results/default_run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from persona_shoppers.numerics import machine_facts, numerics_summary  # noqa: E402
from persona_shoppers.pipeline_registry import STAGES  # noqa: E402


def run_numerics(project: Path) -> str:
    """The numerics the run's base parameters resolve to on this machine."""
    import yaml

    conf = project / "conf" / "base"
    llm = yaml.safe_load((conf / "parameters_llm.yml").read_text())["llm"]
    sft = yaml.safe_load((conf / "parameters_sft.yml").read_text())["sft"]
    return numerics_summary(llm, sft)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    args = parser.parse_args()
    stages = args.stages.split(",")
    work = Path(tempfile.mkdtemp(prefix="persona-shoppers-run-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLCONFIGDIR": str(work / "mpl"),
    }
    kedro = str(ROOT / ".venv" / "bin" / "kedro")
    times: dict[str, float] = {}
    for stage in stages:
        log = work / f"{stage}.log"
        started = time.perf_counter()
        with log.open("w") as out:
            done = subprocess.run(
                [kedro, "run", f"--pipelines={stage}"],
                cwd=clone,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        times[stage] = round(time.perf_counter() - started, 1)
        print(f"{stage:20s} {times[stage]:8.1f} s", flush=True)
        if done.returncode:
            print(log.read_text()[-3000:])
            raise SystemExit(f"{stage} failed (log: {log})")
    total = round(sum(times.values()), 1)
    print(f"{'total':20s} {total:8.1f} s ({total / 60:.1f} min)")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "commit": commit,
        "seconds_per_pipeline": times,
        "total_seconds": total,
        "machine": machine_facts(numerics=run_numerics(clone)),
    }
    out = ROOT / "benchmarks" / "results" / "default_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
