"""Measure a simulated population against the humans its agents stand for, on a finished run.

    python benchmarks/bench_fidelity.py [--matched-per-shop 8] [--ab-per-shop 8]
        [--conditions base persona_token token_mismatch] [--uncalibrated] [--no-ab]
        [--on-policy-agents N [--on-policy-seed S]]
        [--reuse base --reuse-from OLD.sessions.parquet]
        [--env base] [--out benchmarks/results/bench_fidelity.json]

Reads the catalog datasets of a finished default run (``data/``: the personas, the text
personas, the SFT model and its calibration, the stores, the human sessions) and:

1. builds the populations with the simulation pipeline's own node, ``--matched-per-shop``
   matched agents per eval shop (at most the text personas a shop has) and
   ``--ab-per-shop`` A/B agents; the SFT agents' calibration is the run's
   ``agent_action_calibration``, or ``sft_action_calibration`` refitted on ``--on-policy-agents``
   agents' own steps by the pipeline's node (0: as fitted on the buyers' steps; the agents
   drawn with ``--on-policy-seed``, default the parameters');
2. rolls out the chosen ``--conditions`` (from ``simulation.conditions``) on the matched
   agents with ``simulate_conditions``; ``--uncalibrated`` adds the persona-token agents
   without the calibration (``persona_token_uncalibrated``), on the same agents;
   ``--reuse`` takes conditions' sessions from an earlier run's ``.sessions.parquet`` instead
   (``--reuse-from``; refused unless they hold the same matched agents), e.g. the base
   condition, which no change to the SFT model or its calibration touches; an empty
   ``--conditions`` with ``--no-ab`` re-scores earlier sessions without simulating;
3. runs the A/B tests with ``run_ab_tests`` (unless ``--no-ab``);
4. scores them with the alignment pipeline's functions: the funnel against the matched
   humans, session KL, ARA with correct minus all-mismatch, the A/B directions.

Writes the figures with their n and intervals, the minutes each part took and the machine
(``benchmarks/results/bench_fidelity.json``), and the sessions beside it (parquet). The
sizes are what a 2-core machine affords in about an hour; ``--env fidelity`` sizes are 17
per shop (docs/simulation.md, "Population sizes").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from persona_shoppers.alignment.metrics import ab_metrics, action_rate_metrics
from persona_shoppers.numerics import machine_facts
from persona_shoppers.pipelines.alignment.nodes import measure_sessions
from persona_shoppers.pipelines.simulation.nodes import (
    build_simulation_agents,
    calibrate_agents_on_policy,
    run_ab_tests,
    simulate_conditions,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
UNCALIBRATED = "persona_token_uncalibrated"


def _catalog(env: str):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    session = KedroSession.create(project_path=ROOT, env=env)
    context = session.load_context()
    return context.catalog, context.params


def _reused(conditions: list[str], path: str | None, agents: pd.DataFrame) -> pd.DataFrame:
    """The sessions of ``conditions`` from an earlier run, if they are of the same agents."""
    if path is None:
        raise SystemExit("--reuse needs --reuse-from")
    earlier = pd.read_parquet(path)
    matched = set(agents.loc[agents["population"] == "matched", "agent_id"])
    out = earlier[earlier["condition"].isin(conditions)]
    for condition in conditions:
        ids = set(out.loc[out["condition"] == condition, "agent_id"])
        if ids != matched:
            raise SystemExit(f"--reuse {condition}: {path} does not hold the same matched agents")
    return out


def _agent_calibration(
    catalog, shared: dict, simulation: dict, params: dict, agents: int | None, seed: int | None
) -> dict:
    """The calibration the SFT agents shop with: the run's ``agent_action_calibration``, or
    (with ``--on-policy-agents N``, or where the run has none) ``sft_action_calibration``
    refitted on N agents' own steps by the pipeline's node (0: as fitted on the buyers')."""
    if agents is None and catalog.exists("agent_action_calibration"):
        return catalog.load("agent_action_calibration")
    on_policy = dict(simulation["on_policy_calibration"])
    if agents is not None:
        on_policy["agents"] = agents
    if seed is not None:
        on_policy["seed"] = seed
    return calibrate_agents_on_policy(
        catalog.load("sft_action_calibration"),
        catalog.load("sft_traces_stage2"),
        shared["sft_model"],
        shared["storefronts"],
        simulation["rollout"],
        on_policy,
        params["sft"]["calibration"]["max_bias"],
        params["llm"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--matched-per-shop", type=int, default=8)
    parser.add_argument("--ab-per-shop", type=int, default=8)
    parser.add_argument(
        "--conditions", nargs="*", default=["base", "persona_token", "token_mismatch"]
    )
    parser.add_argument("--uncalibrated", action="store_true")
    parser.add_argument("--on-policy-agents", type=int, default=None, metavar="N")
    parser.add_argument("--on-policy-seed", type=int, default=None, metavar="S")
    parser.add_argument("--reuse", nargs="+", default=[], metavar="CONDITION")
    parser.add_argument("--reuse-from", default=None, metavar="SESSIONS_PARQUET")
    parser.add_argument("--no-ab", action="store_true")
    parser.add_argument("--env", default="base")
    parser.add_argument("--out", default=str(RESULTS / "bench_fidelity.json"))
    args = parser.parse_args()

    catalog, params = _catalog(args.env)
    simulation, alignment = params["simulation"], params["alignment"]
    unknown = sorted(set(args.conditions) - set(simulation["conditions"]))
    if unknown:
        raise SystemExit(f"--conditions: not in simulation.conditions: {unknown}")
    populations = {
        "shop_sample_per_shop": 0,
        "matched_per_shop": args.matched_per_shop,
        "ab_sample_per_shop": 0 if args.no_ab else args.ab_per_shop,
    }
    load = catalog.load
    agents = build_simulation_agents(
        load("shop_persona_distributions"),
        load("persona_assignments"),
        load("enriched_events"),
        load("text_personas"),
        simulation["seed"],
        populations,
    )
    shared = {
        "sft_model": load("sft_model"),
        "sft_model_single_stage": None,
        "storefronts": load("storefronts"),
        "raw_products": load("raw_products"),
        "raw_collections": load("raw_collections"),
    }
    minutes, tables = {}, []
    started = time.perf_counter()
    calibration = _agent_calibration(
        catalog, shared, simulation, params, args.on_policy_agents, args.on_policy_seed
    )
    shared["agent_action_calibration"] = calibration
    minutes["agent_calibration"] = round((time.perf_counter() - started) / 60, 1)
    matched = {
        name: {**simulation["conditions"][name], "populations": ["matched"]}
        for name in args.conditions
    }
    runs = [(matched, simulation["rollout"])] if matched else []
    if args.uncalibrated:
        spec = {**simulation["conditions"]["persona_token"], "populations": ["matched"]}
        runs.append(({UNCALIBRATED: spec}, {**simulation["rollout"], "calibrated": False}))
    for conditions, rollout in runs:
        started = time.perf_counter()
        sessions, _, _ = simulate_conditions(
            agents,
            shared["sft_model"],
            shared["sft_model_single_stage"],
            shared["agent_action_calibration"],
            shared["storefronts"],
            shared["raw_products"],
            shared["raw_collections"],
            conditions,
            rollout,
            False,
            params["llm"],
        )
        minutes[" + ".join(conditions)] = round((time.perf_counter() - started) / 60, 1)
        tables.append(sessions)
    if args.reuse:
        tables.append(_reused(args.reuse, args.reuse_from, agents))
    sessions = pd.concat(tables, ignore_index=True)
    enriched_sessions = load("enriched_sessions")
    population, seed, draws = "matched", alignment["seed"], alignment["bootstrap_draws"]
    session, _ = measure_sessions(
        enriched_sessions,
        sessions,
        shared["storefronts"],
        alignment["session"],
        population,
        seed,
        draws,
    )
    rates, _ = action_rate_metrics(
        sessions,
        enriched_sessions,
        load("buyers"),
        load("persona_assignments"),
        population,
        seed,
        draws,
    )
    report = {
        "agent_calibration": calibration.get("on_policy"),
        "agents": {
            "matched": int((agents["population"] == "matched").sum()),
            "ab_sample": int((agents["population"] == "ab_sample").sum()),
        },
        "outcomes": sessions.groupby("condition")["outcome"].value_counts().unstack().to_dict(),
        "metrics": {
            k: v
            for k, v in {**session, **rates}.items()
            if k.startswith(
                ("funnel/", "funnel_by_stratum/", "session/", "action_rate/ara", "action_rate/atc/")
            )
        },
    }
    if not args.no_ab:
        started = time.perf_counter()
        results, ab_sessions = run_ab_tests(
            agents,
            shared["sft_model"],
            shared["agent_action_calibration"],
            shared["storefronts"],
            shared["raw_products"],
            shared["raw_collections"],
            load("planted_truth"),
            {**simulation["ab_tests"], "population": "ab_sample"},
            simulation["conditions"],
            simulation["rollout"],
            False,
            simulation["reference_effects"],
            params["llm"],
        )
        minutes["ab_tests"] = round((time.perf_counter() - started) / 60, 1)
        report["ab_tests"] = results.to_dict("records")
        report["ab_metrics"] = ab_metrics(results)
        ab_sessions.to_parquet(Path(args.out).with_suffix(".ab_sessions.parquet"))
    report.update(
        minutes=minutes,
        command=" ".join(["python", *sys.argv]),
        machine=machine_facts(),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sessions.to_parquet(out.with_suffix(".sessions.parquet"))
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
