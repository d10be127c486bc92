"""Time the default `kedro run` on a fresh clone, and split it by pipeline.

The committed tree (HEAD) is cloned into a temporary folder, so nothing a previous run left
behind (converted models, LLM response cache, embedding cache, outputs, mlflow.db) helps;
the project's .venv is reused (installing is not part of a run). One plain `kedro run` (one
process, as a user runs it; `--stages` runs `kedro run --pipelines=<stages>`) logs each
node's end with a millisecond timestamp (`KEDRO_LOGGING_CONFIG`, a plain file log); the wall
time from the start to each node's end is given to that node's pipeline
(`pipeline_registry.STAGES`), so the pipelines' seconds add up to the whole run.

    .venv/bin/python benchmarks/bench_default_run.py [--keep] [--stages a,b,...]

Prints a table and writes benchmarks/results/default_run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

# A plain log of the run: a millisecond timestamp (seconds since the epoch) before each message.
LOGGING = """
version: 1
disable_existing_loggers: false
formatters:
  stamped: {{format: "%(created).3f %(name)s %(message)s"}}
handlers:
  file: {{class: logging.FileHandler, filename: "{path}", formatter: stamped}}
loggers:
  kedro: {{level: INFO}}
  persona_shoppers: {{level: INFO}}
root: {{handlers: [file], level: INFO}}
"""
COMPLETED = re.compile(r"^(\d+\.\d+) \S+ Completed node: (\S+)")
RUNNING = re.compile(r"^(\d+\.\d+) \S+ Running node: ")


def stage_of_nodes(project: Path, stages: list[str]) -> dict[str, str]:
    """Which stage each node of the project belongs to."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    return {node.name: stage for stage in stages for node in pipelines[stage].nodes}


def split_by_stage(log: Path, started: float, stage_of: dict[str, str]) -> dict[str, float]:
    """Wall seconds of the start-up (to the first node's start) and per stage (from the
    previous node's end, its outputs saved, to each node's end)."""
    times = {"start-up": 0.0} | dict.fromkeys(stage_of.values(), 0.0)
    last = None
    for line in log.read_text().splitlines():
        if last is None and (running := RUNNING.match(line)):
            last = float(running.group(1))
            times["start-up"] = last - started
        elif done := COMPLETED.match(line):
            at = float(done.group(1))
            times[stage_of[done.group(2)]] += at - last
            last = at
    return {stage: round(seconds, 1) for stage, seconds in times.items()}


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
    log = work / "run.log"
    logging_conf = work / "logging.yml"
    logging_conf.write_text(LOGGING.format(path=log))
    env["KEDRO_LOGGING_CONFIG"] = str(logging_conf)
    command = [kedro, "run"]
    if args.stages != ",".join(STAGES):
        command.append(f"--pipelines={args.stages}")
    stage_of = stage_of_nodes(clone, stages)
    started = time.time()
    with (work / "run.out").open("w") as out:
        done = subprocess.run(command, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
    ended = time.time()
    if done.returncode:
        print((work / "run.out").read_text()[-3000:])
        raise SystemExit(f"kedro run failed (log: {log})")
    times = split_by_stage(log, started, stage_of)
    times["after the last node"] = round(ended - started - sum(times.values()), 1)
    for stage, seconds in times.items():
        print(f"{stage:20s} {seconds:8.1f} s")
    total = round(ended - started, 1)
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
