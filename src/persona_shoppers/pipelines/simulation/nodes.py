"""Nodes of the simulation pipeline: agent populations per evaluation shop, rollouts under
persona conditions, and agentic A/B tests (PAARS 4.3 and 5; SimPersona 3.2, appendix I)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.agent.conditions import as_dict, condition_llm
from persona_shoppers.agent.on_policy import fit_on_policy
from persona_shoppers.agent.population import (
    agent_goal,
    buyer_top_categories,
    condition_profile,
    matched_agents,
    runs_to_sessions,
    shop_sample_agents,
    text_persona_profile,
)
from persona_shoppers.agent.prompts import interest_goal
from persona_shoppers.agent.rollout import OUTCOMES, AgentSpec, RolloutEngine
from persona_shoppers.metrics.behaviour import ab_agreement
from persona_shoppers.metrics.intervals import bootstrap_interval, excludes_zero
from persona_shoppers.personas.token_format import is_persona_token
from persona_shoppers.storefront import Store, StoreVariant

logger = logging.getLogger(__name__)

# The funnel (sessions with an add to cart, a checkout, a purchase) and the sales per session,
# under the generator's names (planted_truth.json), so reference effects match by name.
AB_METRICS = ("atc_rate", "checkout_rate", "conversion_rate", "revenue_per_session")


def build_simulation_agents(
    shop_persona_distributions: pd.DataFrame,
    persona_assignments: pd.DataFrame,
    enriched_events: pl.DataFrame,
    text_personas: pd.DataFrame,
    seed: int,
    populations: dict[str, int],
) -> pd.DataFrame:
    """The populations of every evaluation shop (see ``persona_shoppers.agent.population``).

    Every agent stands for one real buyer of its shop (``buyer_id``) and takes that buyer's
    token, stratum (intent) and top category. The matched population is the held-out buyers
    that have a PAARS text persona, up to ``matched_per_shop`` per shop, so that every
    condition runs on the same buyers; the sampled populations draw buyers from the shop."""
    roles = shop_persona_distributions
    shops = sorted(roles.loc[roles["shop_role"] == "eval", "shop_id"].unique())
    if not shops:
        raise ValueError("build_simulation_agents: shop_persona_distributions has no eval shop")
    in_shops = persona_assignments[persona_assignments["shop_id"].isin(shops)]
    in_shops = in_shops[["shop_id", "buyer_id", "token", "stratum"]]
    keys = pl.from_pandas(in_shops[["shop_id", "buyer_id"]])
    top = buyer_top_categories(enriched_events.join(keys, on=["shop_id", "buyer_id"], how="semi"))
    counterparts = in_shops.merge(top, on=["shop_id", "buyer_id"], how="left")
    counterparts["category"] = counterparts["category"].fillna("products")
    sampled = [
        shop_sample_agents(counterparts, n, seed, population)
        for population, n in (
            ("shop_sample", populations["shop_sample_per_shop"]),
            ("ab_sample", populations.get("ab_sample_per_shop", 0)),
        )
        if n
    ]
    ok = text_personas[(text_personas["status"] == "ok") & text_personas["shop_id"].isin(shops)]
    chosen = (
        ok.sort_values(["shop_id", "buyer_id"])
        .groupby("shop_id")
        .head(populations["matched_per_shop"])
    )
    buyers = chosen[["shop_id", "buyer_id"]].merge(counterparts, on=["shop_id", "buyer_id"])
    personas = chosen.set_index(["shop_id", "buyer_id"])
    buyers["text_persona"] = [
        text_persona_profile(
            as_dict(personas.at[key, "profile"]), as_dict(personas.at[key, "preferences"])
        )
        for key in zip(buyers["shop_id"], buyers["buyer_id"], strict=True)
    ]
    matched = matched_agents(buyers, in_shops["token"].unique(), seed)
    agents = pd.concat([matched, *sampled], ignore_index=True)
    agents["seed"] = [
        int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(len(agents))
    ]
    agents["goal"] = [agent_goal(a) for a in agents.to_dict("records")]
    logger.info(
        "simulation agents: %d matched buyers and %s sampled from p_s(k) over %d eval shops",
        len(matched),
        agents.loc[agents["population"] != "matched", "population"].value_counts().to_dict(),
        len(shops),
    )
    return agents


def condition_engine(
    llm: Any,
    stores: dict[str, Store],
    rollout: dict[str, Any],
    model: str,
    agent_action_calibration: dict[str, Any] | None,
) -> RolloutEngine:
    """The rollout engine of the conditions on ``model``: the two-stage SFT model's agents act
    calibrated where ``rollout.calibrated`` is true (docs/sft.md, "Calibration")."""
    calibrated = model == "sft" and rollout.get("calibrated", False)
    if calibrated and not (agent_action_calibration or {}).get("type_bias"):
        raise ValueError(
            "simulation.rollout.calibrated is true but the agents' calibration has no type_bias "
            "(sft.calibration.examples 0, or the calibrate_sft_agent node not run): fit one or "
            "set simulation.rollout.calibrated: false"
        )
    return RolloutEngine(
        llm,
        stores,
        max_steps=rollout["max_steps"],
        decoding=rollout["decoding"],
        temperature=rollout["temperature"],
        query_temperature=rollout["query_temperature"],
        query_guidance=rollout["query_guidance"],
        lockstep=rollout["lockstep"],
        max_query_tokens=rollout["max_query_tokens"],
        max_progress=rollout["max_progress_steps"],
        type_bias=agent_action_calibration["type_bias"] if calibrated else None,
    )


def calibrate_agents_on_policy(
    sft_action_calibration: dict[str, Any],
    sft_traces_stage2: pd.DataFrame,
    sft_model: Any,
    storefronts: dict[str, Store],
    rollout: dict[str, Any],
    on_policy: dict[str, Any],
    max_bias: float,
    llm_params: dict[str, Any],
) -> dict[str, Any]:
    """The calibration the SFT agents shop with: ``sft_action_calibration`` refitted on the
    agents' own steps (``persona_shoppers.agent.on_policy``; docs/simulation.md, "Calibration
    on the agents' own steps"). The fitting agents are ``on_policy.agents`` training sessions
    of the traces (their shop, intent goal and persona token; training shops only, so no
    evaluation shop is seen). ``agents: 0``, or agents that act uncalibrated, pass the
    calibration on as it is."""
    if not on_policy["agents"] or not rollout.get("calibrated", False):
        return {**sft_action_calibration, "on_policy": None}
    sessions = (
        sft_traces_stage2[sft_traces_stage2["split"] == "train"]
        .sort_values(["session_id", "step"])
        .drop_duplicates("session_id")
        .reset_index(drop=True)
    )
    rng = np.random.default_rng(on_policy["seed"])
    drawn = sessions.iloc[np.sort(rng.permutation(len(sessions))[: on_policy["agents"]])]
    specs = [
        AgentSpec(f"fit_{i}", row["shop_id"], row["goal"], row["persona_token"], int(seed))
        for i, (row, seed) in enumerate(
            zip(drawn.to_dict("records"), rng.integers(0, 2**31, len(drawn)), strict=True)
        )
    ]
    llm = condition_llm("sft", {"sft": sft_model}, llm_params)
    engine = condition_engine(llm, storefronts, rollout, "sft", sft_action_calibration)
    started = time.perf_counter()
    fitted = fit_on_policy(
        engine,
        specs,
        sft_action_calibration["targets"],
        sft_action_calibration["type_bias"],
        on_policy["rounds"],
        max_bias,
    )
    return {
        **sft_action_calibration,
        "type_bias": fitted["type_bias"],
        "state_type_bias": sft_action_calibration["type_bias"],
        "on_policy": {
            "agents": len(specs),
            "rounds": fitted["rounds"],
            "seconds": round(time.perf_counter() - started, 1),
        },
    }


def _goals(agents: pd.DataFrame, goal: str) -> list[str]:
    """The agents' goals under a condition: ``intent`` (buy / browse, the default) or
    ``interest`` (intent-neutral, SimPersona appendix I)."""
    if goal == "intent":
        return agents["goal"].tolist()
    if goal == "interest":
        return [interest_goal(c) for c in agents["category"]]
    raise ValueError(f"condition goal must be 'intent' or 'interest', got {goal!r}")


def _specs(agents: pd.DataFrame, profile: str, goals: list[str]) -> list[AgentSpec]:
    return [
        AgentSpec(a["agent_id"], a["shop_id"], g, condition_profile(a, profile), a["seed"])
        for a, g in zip(agents.to_dict("records"), goals, strict=True)
    ]


class Arm(NamedTuple):
    """Agents of one condition in one store variant."""

    condition: str
    spec: dict[str, Any]
    agents: pd.DataFrame
    variant: str = "control"


def _rollout(
    arms: list[Arm],
    engine: RolloutEngine,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
) -> pd.DataFrame:
    """Roll out every arm on one engine, all agents in lockstep (arms share the LLM's
    batches), and label their sessions. The engine's stores are keyed by shop, or by
    ``<variant>/<shop>`` when arms differ in variant."""
    keyed = len({a.variant for a in arms}) > 1
    specs, tables = [], []
    for arm in arms:
        goals = _goals(arm.agents, arm.spec.get("goal", "intent"))
        mine = _specs(arm.agents, arm.spec["profile"], goals)
        # Agent ids are unique per condition; the engine needs them unique over all arms.
        specs += [
            replace(
                a,
                agent_id=f"{arm.condition}|{arm.variant}|{a.agent_id}",
                metadata={"store": f"{arm.variant}/{a.shop_id}"} if keyed else {},
            )
            for a in mine
        ]
        columns = ["agent_id", "population", "buyer_id", "token", "stratum", "category"]
        labels = arm.agents[columns].rename(
            columns={"buyer_id": "counterpart_id", "token": "buyer_token"}
        )
        labels["goal"] = goals
        labels["condition"] = arm.condition
        labels["variant"] = arm.variant
        labels["persona_token"] = [a.profile if is_persona_token(a.profile) else None for a in mine]
        tables.append(labels)
    started = time.perf_counter()
    runs = engine.run(specs)
    minutes = (time.perf_counter() - started) / 60
    logger.info(
        "%s: %d sessions in %.1f min (%.1f per minute)",
        " + ".join(dict.fromkeys(f"{a.condition}/{a.variant}" for a in arms)),
        len(runs),
        minutes,
        len(runs) / max(minutes, 1e-9),
    )
    runs = [replace(r, spec=replace(r.spec, agent_id=r.spec.agent_id.split("|")[-1])) for r in runs]
    labels = pd.concat(tables, ignore_index=True)
    labels["outcome"] = [r.outcome for r in runs]
    labels["n_actions"] = [len(r.actions) for r in runs]
    labels["n_errors"] = [len(r.errors) for r in runs]
    return runs_to_sessions(runs, labels, raw_products, raw_collections)


def simulate_conditions(
    simulation_agents: pd.DataFrame,
    sft_model: Any,
    sft_model_single_stage: Any,
    agent_action_calibration: dict[str, Any],
    storefronts: dict[str, Store],
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    conditions: dict[str, dict[str, Any]],
    rollout: dict[str, Any],
    llm_cache: bool,
    llm_params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Roll out every condition on its populations in the control stores.

    Returns ``simulated_sessions``, the outcome counts per condition and population, and
    their MLflow metrics."""
    by_model: dict[str, list] = {}
    for condition, spec in conditions.items():
        for population in spec["populations"]:
            agents = simulation_agents[simulation_agents["population"] == population]
            by_model.setdefault(spec["model"], []).append(Arm(condition, spec, agents))
    models = {"sft": sft_model, "sft_single_stage": sft_model_single_stage}
    tables = [
        _rollout(
            arms,
            condition_engine(
                condition_llm(model, models, llm_params, cache=llm_cache),
                storefronts,
                rollout,
                model,
                agent_action_calibration,
            ),
            raw_products,
            raw_collections,
        )
        for model, arms in by_model.items()
    ]
    sessions = pd.concat(tables, ignore_index=True)
    counts = _outcome_counts(sessions)
    metrics = {
        f"{c}.{p}.{o}": {"value": float(n), "step": 0}
        for c, by_pop in counts.items()
        for p, by_outcome in by_pop.items()
        for o, n in by_outcome.items()
    }
    return sessions, counts, metrics


def _outcome_counts(sessions: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (condition, population), group in sessions.groupby(["condition", "population"]):
        found = group["outcome"].value_counts()
        by_outcome = {o: int(found.get(o, 0)) for o in OUTCOMES}
        by_outcome["sessions"] = len(group)
        by_outcome["malformed_actions"] = int(group["n_errors"].sum())
        counts.setdefault(condition, {})[population] = by_outcome
    return counts


def _per_session(sessions: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each A/B metric's value per session (flags, and the order value for revenue)."""
    return {
        "atc_rate": sessions["has_add_to_cart"].to_numpy(float),
        "checkout_rate": sessions["has_checkout"].to_numpy(float),
        "conversion_rate": sessions["has_purchase"].to_numpy(float),
        "revenue_per_session": sessions["order_value"].fillna(0.0).to_numpy(float),
    }


def _relative(treatment: np.ndarray, control: np.ndarray) -> float:
    """treatment mean / control mean - 1; NaN when the control mean is zero (no direction)."""
    base = float(control.mean()) if control.size else 0.0
    return float(treatment.mean()) / base - 1 if base else float("nan")


def _status(simulated: float, low: float, high: float, reference: float) -> str:
    """How a simulated effect compares with the reference: ``undefined`` (no reference, or a
    zero control arm), ``inconclusive`` (the paired interval covers zero), ``agrees`` or
    ``disagrees`` (in direction)."""
    if not (np.isfinite(reference) and np.isfinite(simulated)):
        return "undefined"
    if not excludes_zero(low, high):
        return "inconclusive"
    return "agrees" if ab_agreement(simulated, reference)["direction_agrees"] else "disagrees"


def _reference_effects(
    planted_truth: dict[str, Any] | None, reference_effects: dict[str, Any] | None
) -> dict:
    """name -> {metric: relative effect}: user-supplied historical results win over the
    generator's planted effects on its evaluation shops."""
    found = {
        t["name"]: {
            metric: float("nan") if effect is None else effect
            for metric, effect in t["pooled"]["eval"]["effect"].items()
        }
        for t in (planted_truth or {}).get("ab_tests", [])
    }
    found.update(reference_effects or {})
    return found


def run_ab_tests(
    simulation_agents: pd.DataFrame,
    sft_model: Any,
    agent_action_calibration: dict[str, Any],
    storefronts: dict[str, Store],
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    planted_truth: dict[str, Any],
    ab_tests: dict[str, Any],
    conditions: dict[str, dict[str, Any]],
    rollout: dict[str, Any],
    llm_cache: bool,
    reference_effects: dict[str, Any] | None,
    llm_params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agentic A/B tests: the same population shops the control and each treatment store.

    The control arm and every treatment arm are rolled out together in lockstep (the same
    agents, seeds and goals), each in its own store; a treatment store differs from the
    control only in its variant. Returns ``ab_test_results`` (per test and metric: arms,
    simulated effect with its paired 95% bootstrap interval over agents, reference effect,
    status, direction agreement where the interval excludes zero, magnitude ratio) and the
    sessions of every arm (``variant`` says which)."""
    condition = ab_tests["condition"]
    spec = conditions[condition]
    population = ab_tests["population"]
    agents = simulation_agents[simulation_agents["population"] == population]
    if agents.empty:
        raise ValueError(f"run_ab_tests: simulation_agents has no {population!r} agent")
    names = [t["name"] for t in ab_tests["tests"]]
    if "control" in names or len(set(names)) != len(names):
        raise ValueError(f"run_ab_tests: test names must be unique and not 'control': {names}")
    variants = {"control": StoreVariant()} | {
        t["name"]: StoreVariant().with_changes(t["name"], **t["changes"]) for t in ab_tests["tests"]
    }
    stores = {
        f"{name}/{shop}": storefronts[shop].with_variant(variant)
        for name, variant in variants.items()
        for shop in sorted(agents["shop_id"].unique())
    }
    llm = condition_llm(spec["model"], {"sft": sft_model}, llm_params, cache=llm_cache)
    sessions = _rollout(
        [Arm(condition, spec, agents, name) for name in variants],
        condition_engine(llm, stores, rollout, spec["model"], agent_action_calibration),
        raw_products,
        raw_collections,
    )
    control = sessions[sessions["variant"] == "control"].set_index("agent_id")
    references = _reference_effects(planted_truth, reference_effects)
    rows = []
    for t, test in enumerate(ab_tests["tests"]):
        treated = sessions[sessions["variant"] == test["name"]].set_index("agent_id")
        treated = treated.loc[control.index]  # paired: the same agent in both arms
        arms = _per_session(control), _per_session(treated)
        reference = references.get(test["name"], {})
        for m, metric in enumerate(AB_METRICS):
            c, x = arms[0][metric], arms[1][metric]
            simulated = _relative(x, c)
            low, high = bootstrap_interval(
                lambda idx, c=c, x=x: _relative(x[idx], c[idx]),
                len(c),
                ab_tests["bootstrap_draws"],
                seed=int(np.random.SeedSequence([t, m]).generate_state(1)[0]),
            )
            expected = float(reference.get(metric, float("nan")))
            status = _status(simulated, low, high, expected)
            decided = status in ("agrees", "disagrees")
            rows.append(
                {
                    "test": test["name"],
                    "metric": metric,
                    "condition": condition,
                    "sessions_per_arm": len(c),
                    "control": float(c.mean()),
                    "treatment": float(x.mean()),
                    "simulated_effect": simulated,
                    "ci_low": low,
                    "ci_high": high,
                    "reference_effect": expected,
                    "status": status,
                    "direction_agreement": status == "agrees" if decided else None,
                    "magnitude_ratio": simulated / expected
                    if status != "undefined" and expected
                    else float("nan"),
                }
            )
    results = pd.DataFrame(rows)
    logger.info("A/B tests:\n%s", results.to_string(index=False))
    return results, sessions
