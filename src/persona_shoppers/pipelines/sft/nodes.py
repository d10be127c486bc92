"""Nodes of the sft pipeline: persona tokens into the LLM's vocabulary, stage 1 (persona
grounding: only the new rows train), stage 2 (the model trains, full or LoRA), and the
single-stage ablation (everything trains from the start; SimPersona appendix F).

The training nodes train the model they are given in place, as copying a large model costs
memory: the catalog gives each node its own copy (file datasets load afresh, a MemoryDataset
deep-copies), so keep models out of ``copy_mode: assign`` datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from persona_shoppers.agent.conditions import model_llm
from persona_shoppers.agent.evaluation import (
    evaluate_agent,
    evaluation_settings,
    evaluation_setup,
    fit_agent_calibration,
    step_contexts,
)
from persona_shoppers.datasets import ModelAndTokenizer
from persona_shoppers.llm.models import DEFAULT_HF_CACHE_DIR, resolve_model
from persona_shoppers.sft.data import conversations, query_only, sample_split
from persona_shoppers.sft.tokens import add_persona_tokens, find_persona_tokens
from persona_shoppers.sft.training import train_stage
from persona_shoppers.vq_vae.model import BehaviourVQVAE

logger = logging.getLogger(__name__)

Conversations = list[list[dict]]

# The condition model kind (agent.conditions.MODEL_KINDS) of each model evaluate_sft scores.
EVALUATED_KINDS = {"zero_shot": "llm", "two_stage": "sft", "single_stage": "sft_single_stage"}

# The ``sft`` settings every training stage shares: the training nodes' ``**training``.
TRAINING_SETTINGS = (
    "seed",
    "data",
    "trainer",
    "checkpoint",
    "history_every_n_steps",
    "validate_before",
)


def _base_model_folder(
    model: str | None, hf_cache_dir: str | None, llm_params: dict[str, Any]
) -> Path:
    """The folder of the model SFT starts from: ``sft.model``, else the ``llm`` model."""
    if model is None:
        if llm_params.get("backend", "local") != "local":
            raise ValueError(
                "sft.model is null and the llm backend is not local: set sft.model to a local "
                "model name or Hugging Face folder to fine-tune"
            )
        model = llm_params["model"]
    cache = hf_cache_dir or llm_params.get("hf_cache_dir") or DEFAULT_HF_CACHE_DIR
    return resolve_model(model, cache)


def add_persona_tokens_to_model(
    vq_vae_model: BehaviourVQVAE,
    model: str | None,
    hf_cache_dir: str | None,
    persona_tokens: dict[str, Any],
    seed: int,
    llm_params: dict[str, Any],
) -> ModelAndTokenizer:
    """The base LM (``sft.model``, default the ``llm`` model) with K persona tokens added to
    its tokenizer and embeddings, K = the VQ-VAE's number of codes; the new rows are
    initialised by ``sft.persona_tokens.init`` (``mean`` or ``codebook``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _base_model_folder(model, hf_cache_dir, llm_params)
    logger.info("SFT base model: %s", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    codebook = vq_vae_model.codebook.embedding.detach().cpu()
    add_persona_tokens(
        base,
        tokenizer,
        count=codebook.shape[0],
        init=persona_tokens["init"],
        codebook=codebook,
        noise_std=persona_tokens.get("noise_std", 0.02),
        seed=seed,
    )
    return ModelAndTokenizer(base, tokenizer)


def _training_rows(
    traces: pd.DataFrame, stage: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stage's drawn training steps and its query-only search steps."""
    train = sample_split(
        traces,
        "train",
        stage.get("max_examples"),
        seed,
        stage.get("stratify_by"),
        stage.get("stratify_weights"),
    )
    return train, query_steps(traces, train.index, stage.get("query_examples") or 0, seed)


def _sample(traces: pd.DataFrame, stage: dict[str, Any], seed: int) -> tuple[Conversations, ...]:
    stratify_by = stage.get("stratify_by")
    train, extra = _training_rows(traces, stage, seed)
    val = sample_split(traces, "validation", stage.get("max_val_examples"), seed)
    shares = (
        f" (by {stratify_by}: {train[stratify_by].value_counts().to_dict()})" if stratify_by else ""
    )
    logger.info(
        "sampled %d of %d training%s and %d of %d validation examples",
        len(train),
        int((traces["split"] == "train").sum()),
        shares,
        len(val),
        int((traces["split"] == "validation").sum()),
    )
    if len(extra):
        logger.info("and %d training search steps trained on their query only", len(extra))
    return conversations(train) + [query_only(c) for c in conversations(extra)], conversations(val)


def query_steps(traces: pd.DataFrame, drawn: pd.Index, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` training search steps outside the ``drawn`` rows (seeded, trace order)."""
    searches = traces[(traces["split"] == "train") & (traces["action"] == "search")]
    searches = searches.drop(index=drawn, errors="ignore")
    return searches.sample(n=min(n, len(searches)), random_state=seed).sort_index()


def _train(
    start: ModelAndTokenizer,
    train: Conversations,
    val: Conversations,
    stage: dict[str, Any],
    name: str,
    *,
    seed: int,
    data: dict[str, Any],
    trainer: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    history_every_n_steps: int,
    validate_before: bool,
) -> tuple[ModelAndTokenizer, dict]:
    """Train ``start`` on one stage's examples with the settings every stage shares
    (:data:`TRAINING_SETTINGS`; a stage's own ``data`` and ``trainer`` keys win)."""
    model, tokenizer = start
    checkpoint = checkpoint or {}
    folder = checkpoint.get("dir")
    trained, history = train_stage(
        model,
        tokenizer,
        find_persona_tokens(tokenizer),
        train,
        val,
        backbone=stage["backbone"],
        optimizer=stage["optimizer"],
        lora=stage.get("lora"),
        top_layers=stage.get("top_layers"),
        cache_frozen=stage.get("cache_frozen", True),
        early_stopping=stage.get("early_stopping"),
        gradient_checkpointing=stage.get("gradient_checkpointing", False),
        frozen_dtype=stage.get("frozen_dtype"),
        data={**data, **(stage.get("data") or {})},
        trainer={**trainer, **(stage.get("trainer") or {})},
        seed=seed,
        checkpoint_dir=Path(folder) / name if folder else None,
        checkpoint_every_n_steps=checkpoint.get("every_n_train_steps"),
        resume=bool(checkpoint.get("resume", False)),
        history_every_n_steps=history_every_n_steps,
        validate_before=validate_before,
        name=name,
    )
    return ModelAndTokenizer(trained, tokenizer), history


def train_stage1(
    sft_initial_model: ModelAndTokenizer,
    sft_traces_stage1: pd.DataFrame,
    stage1: dict[str, Any],
    **training: Any,
) -> tuple[ModelAndTokenizer, dict]:
    """Stage 1, persona grounding: the backbone is frozen, only the persona rows train, on
    intent-neutral traces. ``training``: :data:`TRAINING_SETTINGS`. Returns the model and its
    metric history (MLflow)."""
    train, val = _sample(sft_traces_stage1, stage1, training["seed"])
    return _train(sft_initial_model, train, val, stage1, "stage1", **training)


def train_stage2(
    sft_model_stage1: ModelAndTokenizer,
    sft_traces_stage2: pd.DataFrame,
    stage2: dict[str, Any],
    **training: Any,
) -> tuple[ModelAndTokenizer, dict]:
    """Stage 2, action-oriented fine-tuning of the stage-1 model on intent-carrying traces:
    every parameter (``backbone: full``), the upper layers (``top``) or LoRA adapters and the
    persona rows (``lora``)."""
    train, val = _sample(sft_traces_stage2, stage2, training["seed"])
    return _train(sft_model_stage1, train, val, stage2, "stage2", **training)


def train_single_stage(
    sft_initial_model: ModelAndTokenizer,
    sft_traces_stage1: pd.DataFrame,
    sft_traces_stage2: pd.DataFrame,
    stage1: dict[str, Any],
    stage2: dict[str, Any],
    single_stage: dict[str, Any] | None,
    **training: Any,
) -> tuple[ModelAndTokenizer, dict]:
    """The single-stage ablation (SimPersona appendix F): every parameter trains from the
    initial model in one run over stage 1's examples and stage-2 examples together, with
    ``single_stage`` settings over stage 2's (its ``max_examples`` and ``max_val_examples``
    size its stage-2 draw)."""
    stage = {**stage2, "backbone": "full", **(single_stage or {})}
    train1, val1 = _sample(sft_traces_stage1, stage1, training["seed"])
    train2, val2 = _sample(sft_traces_stage2, stage, training["seed"])
    return _train(
        sft_initial_model, train1 + train2, val1 + val2, stage, "single_stage", **training
    )


def calibrate_sft_agent(
    sft_traces_stage2: pd.DataFrame,
    sft_model: ModelAndTokenizer,
    stage2: dict[str, Any],
    calibration: dict[str, Any],
    seed: int,
    llm_params: dict[str, Any],
) -> dict[str, Any]:
    """The two-stage model's action-type calibration per kind of page and cart state
    (docs/sft.md, "Calibration"): fitted on ``calibration.examples`` training steps that stage
    2 did not train on (an equal share per context), to the next-action frequencies of every
    training step. ``examples: 0`` fits none (an empty ``type_bias``), e.g. where stage 2
    trains on every training step."""
    if not calibration["examples"]:
        logger.info("calibration: sft.calibration.examples is 0, the agent is not calibrated")
        return {"type_bias": {}, "steps": 0}
    train, extra = _training_rows(sft_traces_stage2, stage2, seed)
    training = sft_traces_stage2[sft_traces_stage2["split"] == "train"]
    unseen = training.drop(index=train.index.union(extra.index))
    unseen = unseen.assign(context=step_contexts(unseen))
    steps = sample_split(unseen, "train", calibration["examples"], calibration["seed"], "context")
    if steps.empty:
        raise ValueError(
            "calibrate_sft_agent: stage 2 trains on every training step of sft_traces_stage2, "
            "none is left to fit the calibration on; lower sft.stage2.max_examples or set "
            "sft.calibration.examples: 0 and simulation.rollout.calibrated: false"
        )
    llm = model_llm("sft", sft_model.folder, llm_params)
    report = fit_agent_calibration(llm, steps, training, calibration["max_bias"])
    for context, after in report["mean_after"].items():
        logger.info(
            "calibration, %s (%d steps): %s",
            context,
            report["steps_by_context"][context],
            ", ".join(
                f"{t} {report['mean_before'][context][t]:.3f}->{p:.3f} "
                f"(buyers {report['targets'][context].get(t, 0.0):.3f})"
                for t, p in after.items()
                if p >= 0.01 or report["targets"][context].get(t)
            ),
        )
    return report


def evaluate_sft(
    sft_traces_stage2: pd.DataFrame,
    sft_model: ModelAndTokenizer,
    sft_model_single_stage: ModelAndTokenizer,
    sft_action_calibration: dict[str, Any],
    evaluation: dict[str, Any],
    model: str | None,
    hf_cache_dir: str | None,
    llm_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The agent before and after SFT on held-out trace steps (``split == "validation"``):
    the zero-shot base model, the two-stage model and the single-stage ablation, each on the
    first ``evaluation.examples[<model>]`` steps of one seeded draw (docs/sft.md, "Evaluation
    before and after SFT"); the two-stage model's figures also calibrated. Returns the report
    and its MLflow metrics."""
    sizes = evaluation["examples"]
    models = {
        "zero_shot": _base_model_folder(model, hf_cache_dir, llm_params),
        "two_stage": sft_model.folder,
        "single_stage": sft_model_single_stage.folder,
    }
    for key in ("examples", "funnel_min_steps"):
        missing = sorted(set(models) - set(evaluation[key]))
        if missing:
            raise ValueError(f"sft.evaluation.{key}: no number of steps for {missing}")
    held_out, tokens, modes, queries = evaluation_setup(sft_traces_stage2, evaluation)
    report: dict[str, Any] = {"tokens": tokens, "page_modes": modes}
    correct = {}
    bar = tqdm(models.items(), desc="SFT evaluation", unit="model")
    for name, folder in bar:
        bar.set_postfix_str(name)
        logger.info("SFT evaluation of the %s model (%s) on %d steps", name, folder, sizes[name])
        llm = model_llm(EVALUATED_KINDS[name], folder, llm_params)
        bias = sft_action_calibration["type_bias"] if name == "two_stage" else None
        report[name], scores = evaluate_agent(
            llm,
            held_out.iloc[: sizes[name]],
            tokens,
            modes,
            queries=queries,
            type_bias=bias,
            funnel_pool=held_out,
            **evaluation_settings(evaluation, name),
        )
        correct[name] = (scores["predicted"] == scores["action"]).to_numpy()
        logger.info("SFT evaluation, %s: %s", name, _headline(report[name]))
    shared = min(len(c) for c in correct.values())
    report["shared_steps"] = {"n": shared} | {
        name: float(c[:shared].mean()) for name, c in correct.items()
    }
    metrics = {
        key: {"value": value, "step": 0}
        for key, value in _numbers({k: report[k] for k in (*models, "shared_steps")}).items()
    }
    return report, metrics


def _headline(report: dict[str, Any]) -> str:
    against = report["against_majority"]
    return (
        f"accuracy {against['accuracy']:.3f} vs majority {against['baseline']:.3f} "
        f"(difference {against['difference']:+.3f}, n={against['n']}), "
        f"mean P(next action) {report['mean_p_next_action']:.3f}"
    )


def _numbers(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested report, keyed by their dotted path."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _numbers(value, f"{path}.")
        elif isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
            out[path] = float(value)
    return out
