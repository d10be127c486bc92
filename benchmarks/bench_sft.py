"""Benchmark SFT training throughput on the default model (CPU): the project's default training
path against the naive way, for stage 1 (persona rows only) and stage 2 (every parameter).

    python benchmarks/bench_sft.py [--examples 48] [--batch-size 8] [--repeats 3]
                                   [--variants naive head_only bf16 grouped flat shared default
                                               packed]
                                   [--stages 1 2] [--threads N] [--model smollm2-135m-instruct]
    python benchmarks/bench_sft.py --compare-init [--examples 96] [--val-examples 64]

The examples of stage s are the pipeline's real traces (``data/05_model_input/sft_traces_stage
<s>.jsonl``, training split, sampled with the seed) when they exist, else synthetic ones. Every
variant of a stage trains on the same examples from the same starting weights (a fresh copy
each time), with AdamW; a step is forward, backward and optimizer step. The variants add one
lever each:

- ``naive``: the usual Hugging Face way: ``model(input_ids, attention_mask, labels)``, full
  logits at every position, fp32, batches in random order padded to their longest example,
  AdamW's default (per-parameter) step; stage 1 trains the whole embedding matrix with a
  gradient hook that zeroes the old rows;
- ``head_only``: the LM head only at labelled (assistant) positions, fp32, same batches;
- ``bf16``: ``head_only`` under bf16 autocast;
- ``grouped``: ``bf16`` plus length-grouped batches, position ids instead of an attention mask
  (plain causal attention) and a multi-tensor (foreach) AdamW; stage 1 trains a separate
  K-row parameter and computes no weight gradient (``PersonaSFTModule.loss``);
- ``flat``: ``grouped`` with each batch flattened into one row without padding, every
  example a segment attending within itself (``persona_shoppers.sft.attention``);
- ``shared``: ``flat`` plus the shared prefix (the tokens every example of a batch starts
  with, a third of an example here, held and computed once per batch);
- ``default``: the project's default path, as ``conf/base/parameters_sft.yml`` selects it,
  run by a Lightning ``Trainer`` (``PersonaSFTModule``, the data module's batches, the
  configured precision, optimizer, gradient clipping and learning-rate schedule): ``shared``
  plus what the configuration adds (the fused AdamW step, stage 1's bfloat16 frozen weights);
- ``packed``: ``default`` with ``data.packing: true``: rows of several examples, so a batch
  of ``--batch-size`` rows holds more examples (fewer, larger optimizer steps); flattened, a
  packed batch computes what its examples compute unpacked.

Throughput counts real tokens (not padding), the same definition for every variant: all the
stage's examples, over all its batches, after one extra warm-up step (on the first batch) that
is not timed. The machine may be shared, so the variants are interleaved and the whole round is
repeated ``--repeats`` times: a variant's time is the median over the rounds, and its speedup
the median over the rounds of naive's time / its time in the same round. Prints a table and
writes ``benchmarks/results/bench_sft.json`` (with the load average around each measurement).
The table's ``positions`` column is the token positions the model computes per real token:
above 1 with padding, under 1 with the shared prefix held once per batch. CPU seconds
(``time.process_time``) are reported next to wall seconds: with ``--threads 1`` they measure
the work even while other jobs share the machine.

``--compare-init`` instead runs stage 1 of the sft pipeline (``train_stage`` with the stage-1
settings of ``conf/base/parameters_sft.yml``) once per persona-token init (``mean``,
``codebook`` from ``data/06_models/vq_vae.pt``) on the same ``--examples`` training and
``--val-examples`` validation traces, and reports the validation loss before and after
(``benchmarks/results/bench_sft_init.json``).

``--learning-curve --budgets N [--val-examples 96] [--set KEY=VALUE ...] [--plot PNG]``
trains stage 2 on N traces and validates at every ``trainer.val_check_interval``: held-out
next-action accuracy against examples seen and seconds, beside the majority and page-majority
baselines (``benchmarks/results/bench_sft_curve.json``).

``--page-distribution MODEL_DIR [--val-examples 16] [--product-pages 40] [--seed 0]`` scores a
trained model's action types on held-out steps of each kind of page, beside the buyers'
actions on the same steps (``benchmarks/results/bench_sft_pages.json``).

``--price-response MODEL_DIR [--product-pages 40] [--price-multiplier 1.1] [--seed 0]`` scores
the action types on held-out product pages twice, as written and with every price in the
prompt times the multiplier (as a store variant shows them), with the run's
``agent_action_calibration`` applied, and reports each type's mean probability on both and the
paired relative change with a bootstrap interval over pages: whether the agent reads prices
(``benchmarks/results/bench_sft_price_response.json``).

``--queries MODEL_DIR [--temperatures 0 0.3 0.7 1.0] [--val-examples 64] [--seed 0]`` writes
the search queries of up to ``--val-examples`` held-out search steps with the model, as the
simulation writes them, at each temperature, and scores them against the buyers' queries
(MiniLM cosine, beside title-as-query and the goal's category as the query;
``benchmarks/results/bench_sft_queries.json``).

``--token-effect MODEL_DIR [--per-stratum 40] [--seed 0] [--exclude-draw YAML ...]`` asks
whether the model reads its persona token where buyers of different strata act differently:
steps of buy-intent buyers at the funnel's decisions (a checkout page: A purchase, B do not;
a cart or product page with items: A and B check out, C never do; a product page with an
empty cart), that stage 2 did not train on (outside the draw of conf/base's parameters and of
each ``--exclude-draw`` setting, a YAML mapping of sft parameters such as
``"{stage2.max_examples: 480, seed: 7}"``, so that models trained on different draws are
scored on the same unseen steps), are scored with the buyer's own token and with a token of
another stratum (A and B get a C buyer's, C an A buyer's). It reports, per context and
stratum, the buyers' rate of the decision's action beside the model's mean probability with
each token, and the mean
log-likelihood gain of the buyers' actions with their own token, with an interval: 0 for a
model that ignores its token; beside it, what the token could tell: how often the most common
stratum among the training buyers of an evaluation buyer's token is that buyer's stratum
(``benchmarks/results/bench_sft_token_effect.json``).

``--store-queries MODEL_DIR [--temperatures 0.3] [--guidance 1 2]`` writes the first query of
one agent per category on the home page of every shop SFT never saw (the evaluation shops,
where the simulation runs), and reports the share whose results page lists no product and the
share naming the goal's category, at each of ``--guidance`` (default 1 2; 1: no guidance,
``benchmarks/results/bench_sft_store_queries.json``).

``--title-queries MODEL_DIR [--titles FILE] [--temperatures 0] [--guidance 1 2]`` writes the
query of the alignment suite's query-generation prompt for each product title of FILE (default
``benchmarks/data/product_titles.txt``, titles in the style of large retailers' listings, none
from the synthetic catalogs) and reports the id-like share, the MiniLM cosine of query and title
and the share of the query's words in the title
(``benchmarks/results/bench_sft_title_queries.json``).

``--evaluate MODEL_DIR [--val-examples 200] [--calibrate]`` scores one model as
``sft_evaluation`` scores the two-stage model (``agent.evaluation.evaluation_setup`` with the
resolved ``sft.evaluation`` parameters of conf/base) on the first ``--val-examples`` steps of
its draw; ``--calibrate`` first fits its calibration as the ``calibrate_sft_agent`` node does
(``sft.calibration``, ``sft.stage2``) and reports the calibrated figures too
(``benchmarks/results/bench_sft_evaluate.json``).

``--feature-baseline`` fits a gradient-boosted classifier of the next action type on what a
step's prompt says besides product text (kind of page, intent stratum, step, counts of views,
searches and cart additions in the progress log, the previous action, whether the cart is
empty) on the training steps, and scores it on every held-out step beside the majority
action: how far above the majority the buyers' next action can be told from these; then the
same with the persona token added, and with the planted buyer type added where
``data/01_raw/planted_truth.json`` has one (the best any persona could tell)
(``benchmarks/results/bench_sft_feature_baseline.json``).

``--compare-budget [--budgets 64 320] [--seeds 42 7] [--val-examples 6] [--stratify-by
page|none] [--stage2-batch-size N] [--set KEY=VALUE ...] [--keep-models DIR]`` trains stage 2
(default settings, or the given draw, batch size, seeds (the draw and the batch order) and
sft parameters) from the default run's
stage-1 model
(``data/06_models/sft_model_stage1``) on each number of training traces, and prints the mean
action-type distribution on held-out steps per kind of page and true next action: whether the
model reads the page or only learned the marginal action mix
(``benchmarks/results/bench_sft_budget.json``, or ``--out``; the models are kept in
``DIR/sft_budget_<n>_seed_<seed>`` with ``--keep-models``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGE1_MODEL = ROOT / "data" / "06_models" / "sft_model_stage1"
TRACES = ROOT / "data" / "05_model_input" / "sft_traces_stage{}.jsonl"
PLANTED = ROOT / "data" / "01_raw" / "planted_truth.json"
CONF = ROOT / "conf" / "base" / "parameters_sft.yml"
GLOBALS = ROOT / "conf" / "base" / "globals.yml"
VARIANTS = ("naive", "head_only", "bf16", "grouped", "flat", "shared", "default", "packed")
LIGHTNING = ("default", "packed")


def _stage2_traces() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default run's stage-2 traces, and their held-out (validation) steps."""
    frame = pd.read_json(str(TRACES).format(2), lines=True)
    return frame, frame[frame["split"] == "validation"]


def _globals() -> dict:
    import yaml

    return yaml.safe_load(GLOBALS.read_text())


def _max_query_tokens() -> int:
    """The simulation's query length (``agent_decoding.max_query_tokens`` in globals.yml)."""
    return _globals()["agent_decoding"]["max_query_tokens"]


def _params() -> dict:
    import yaml

    return yaml.safe_load(CONF.read_text())["sft"]


def _override(params: dict, setting: str) -> None:
    """Apply ``KEY=VALUE`` to the sft parameters: a dotted key, a YAML value
    (``stage2.train_embeddings=false``)."""
    import yaml

    key, sep, value = setting.partition("=")
    if not sep:
        raise SystemExit(f"--set takes KEY=VALUE, got {setting!r}")
    _set_dotted(params, key, yaml.safe_load(value))


def _set_dotted(params: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _draw_settings(args: argparse.Namespace) -> list[dict]:
    """The sft parameters of conf/base, then of each ``--exclude-draw`` (a YAML mapping of
    dotted keys, e.g. ``{stage2.max_examples: 480, seed: 7}``) applied to them."""
    import yaml

    settings = [_params()]
    for text in args.exclude_draw or []:
        changes = yaml.safe_load(text)
        if not isinstance(changes, dict):
            raise SystemExit(f"--exclude-draw takes a YAML mapping, got {text!r}")
        params = copy.deepcopy(settings[0])
        for key, value in changes.items():
            _set_dotted(params, key, value)
        settings.append(params)
    return settings


def _examples(stage: int, n: int, seed: int) -> tuple[list[list[dict]], str]:
    from persona_shoppers.sft.data import conversations, sample_split

    traces = Path(str(TRACES).format(stage))
    if traces.exists():
        frame = pd.read_json(traces, lines=True)
        return conversations(sample_split(frame, "train", n, seed)), str(traces.relative_to(ROOT))
    sys.path.insert(0, str(ROOT))
    from tests.sft._traces import synthetic_traces

    frame = synthetic_traces(
        sessions=-(-n // 4), steps=4, stage=stage, num_tokens=256, products_per_page=10
    )
    return conversations(frame.head(n)), "synthetic (tests/sft/_traces.py)"


def _batches(examples, variant: str, batch_size: int, seed: int, datamodule) -> list:
    """Batches (lists of rows of examples) of ``variant``: the data module's own for the
    Lightning variants, length-grouped for grouped / flat / shared, else in a seeded random
    order."""
    from persona_shoppers.sft.data import length_grouped_batches

    if variant in LIGHTNING:
        return datamodule.batches("train")
    if variant in ("grouped", "flat", "shared"):
        groups = length_grouped_batches([len(e) for e in examples], batch_size, seed)
    else:
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [[[examples[i]] for i in group] for group in groups]


def _naive_batch(rows, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and unshifted labels (-100 off the assistant tokens)."""
    from persona_shoppers.sft.data import IGNORE

    examples = [row[0] for row in rows]
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for r, e in enumerate(examples):
        ids[r, : len(e)] = torch.tensor(e.input_ids)
        mask[r, : len(e)] = 1
        labels[r, 1 : len(e)] = torch.tensor(e.labels[:-1])  # shifted back: HF shifts itself
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _step_fn(variant: str, stage: int, model, persona, pad_id: int):
    """A function rows -> None doing forward, backward and an optimizer step."""
    from persona_shoppers.sft.data import collate_rows
    from persona_shoppers.sft.module import PersonaSFTModule

    backbone = "frozen" if stage == 1 else "full"
    module = PersonaSFTModule(model, persona.first, persona.count, backbone=backbone)
    naive = variant in ("naive", "head_only", "bf16")
    if naive and stage == 1:  # the usual way: the whole matrix trains, old rows' grads zeroed
        module.persona_rows = None
        embedding = model.get_input_embeddings().weight
        embedding.requires_grad_(True)
        keep = torch.zeros(embedding.shape[0], 1)
        keep[persona.first : persona.stop] = 1
        embedding.register_hook(lambda grad: grad * keep)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, foreach=not naive or None)
    autocast = variant != "naive" and variant != "head_only"
    flatten, share = variant in ("flat", "shared"), variant == "shared"

    def step(rows) -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            if variant == "naive":
                loss = model(**_naive_batch(rows, pad_id)).loss
            elif variant in ("head_only", "bf16"):
                batch = _naive_batch(rows, pad_id)
                hidden = model.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).last_hidden_state[:, :-1]
                labels = batch["labels"][:, 1:]
                chosen = labels != -100
                logits = model.lm_head(hidden[chosen]).float()
                loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
            else:
                loss = module.loss(collate_rows(rows, pad_id, flatten, share))[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _positions(batches, variant: str, params: dict) -> int:
    """Token positions the model computes over ``batches``: padded rows for the padded
    variants; for the flattened ones every real token, the shared prefix once per batch."""
    from persona_shoppers.sft.data import shared_prefix_length

    data = params["data"]
    flatten = variant in ("flat", "shared") or (variant in LIGHTNING and data.get("flatten", True))
    share = variant == "shared" or (variant in LIGHTNING and data.get("share_prefix", True))
    total = 0
    for batch in batches:
        lengths = [sum(len(e) for e in row) for row in batch]
        if not flatten:
            total += len(batch) * max(lengths)
            continue
        shared = shared_prefix_length(batch) if share else 0
        total += sum(lengths) - (sum(len(row) for row in batch) - 1) * shared
    return total


def _plain_seconds(
    variant: str, stage: int, model, persona, pad_id: int, batches
) -> tuple[float, float]:
    """(wall, CPU) seconds of the steps over ``batches``, after a warm-up step."""
    step = _step_fn(variant, stage, model, persona, pad_id)
    step(batches[0])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        step(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def _lightning_seconds(
    model, persona, pad_id: int, batches, params: dict, stage: int
) -> tuple[float, float]:
    """The default path: ``PersonaSFTModule`` with the stage's settings, trained by a
    Lightning ``Trainer`` with the configured trainer arguments on the data module's batches
    (plus a first, untimed warm-up batch); the (wall, CPU) seconds of the timed steps."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from persona_shoppers.sft.data import BatchDataset
    from persona_shoppers.sft.module import PersonaSFTModule

    settings = params[f"stage{stage}"]

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

            self.cpu_seconds: list[float] = []

        def on_train_batch_start(self, *args) -> None:
            self._started = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *args) -> None:
            self.seconds.append(time.perf_counter() - self._started[0])
            self.cpu_seconds.append(time.process_time() - self._started[1])

    module = PersonaSFTModule(
        model,
        persona.first,
        persona.count,
        backbone=settings["backbone"],
        lora=settings.get("lora"),
        gradient_checkpointing=settings.get("gradient_checkpointing", False),
        frozen_dtype=settings.get("frozen_dtype") if settings["backbone"] == "frozen" else None,
        **settings["optimizer"],
    )
    flatten = params["data"].get("flatten", True)
    share = params["data"].get("share_prefix", True)
    dataset = BatchDataset([batches[0], *batches], pad_id, flatten, share)
    loader = DataLoader(dataset, batch_size=None)
    timer = Timer()
    trainer_args = {**params["trainer"], **(settings.get("trainer") or {})}
    trainer_args.update(max_epochs=1, enable_progress_bar=False, num_sanity_val_steps=0)
    trainer = pl.Trainer(
        **trainer_args,
        limit_val_batches=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    return sum(timer.seconds[1:]), sum(timer.cpu_seconds[1:])


def bench(args: argparse.Namespace) -> dict:
    import lightning.pytorch as pl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.llm.models import resolve_model
    from persona_shoppers.sft.data import SFTDataModule, tokenize_examples
    from persona_shoppers.sft.tokens import add_persona_tokens

    pl.seed_everything(args.seed, verbose=False)
    params = _params()
    data = {**params["data"], "batch_size": args.batch_size}
    folder = resolve_model(args.model, "data/06_models/hf")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    persona = add_persona_tokens(base, tokenizer, 256, init="mean", seed=0)
    pad_id = tokenizer.pad_token_id
    rows, sources = [], {}
    for stage in args.stages:
        conversations, sources[stage] = _examples(stage, args.examples, args.seed)
        examples, report = tokenize_examples(
            conversations, tokenizer, data["max_length"], data.get("overlong", "drop")
        )
        tokens = report.tokens
        print(
            f"stage {stage}: {len(examples)} examples from {sources[stage]}: {tokens} tokens "
            f"({report.labelled_tokens} labelled), {tokens / len(examples):.0f} per example",
            flush=True,
        )
        batches = {}
        for variant in args.variants:
            options = {**data, "packing": variant == "packed" or data.get("packing", False)}
            datamodule = SFTDataModule(tokenizer, conversations, seed=args.seed, **options)
            if variant in LIGHTNING:
                datamodule.setup("fit")
            batches[variant] = _batches(examples, variant, args.batch_size, args.seed, datamodule)
        seconds = {v: [] for v in args.variants}
        cpu = {v: [] for v in args.variants}
        loads = {v: [] for v in args.variants}
        for repeat in range(args.repeats):
            for variant in args.variants:
                model = copy.deepcopy(base).train()
                load = os.getloadavg()[0]
                if variant in LIGHTNING:
                    took, used = _lightning_seconds(
                        model, persona, pad_id, batches[variant], params, stage
                    )
                else:
                    took, used = _plain_seconds(
                        variant, stage, model, persona, pad_id, batches[variant]
                    )
                seconds[variant].append(took)
                cpu[variant].append(used)
                loads[variant].append(round((load + os.getloadavg()[0]) / 2, 2))
                print(
                    f"stage {stage} round {repeat + 1} {variant:<10} {took:8.1f}s "
                    f"{tokens / took:7.0f} tokens/s, CPU {used:8.1f}s "
                    f"(load {loads[variant][-1]:.1f})",
                    flush=True,
                )
                del model
        for variant in args.variants:
            b = batches[variant]
            positions = _positions(b, variant, params)
            median = statistics.median(seconds[variant])
            ratios = [
                n / s for n, s in zip(seconds.get("naive", []), seconds[variant], strict=False)
            ]
            cpu_ratios = [n / s for n, s in zip(cpu.get("naive", []), cpu[variant], strict=False)]
            rows.append(
                {
                    "stage": stage,
                    "variant": variant,
                    "steps": len(b),
                    "tokens": tokens,
                    "seconds": seconds[variant],
                    "median_seconds": median,
                    "tokens_per_s": tokens / median,
                    "positions": positions,  # token positions computed (padding included)
                    "positions_per_token": positions / tokens,
                    "speedup_vs_naive": statistics.median(ratios) if ratios else None,
                    "speedups_per_round": ratios,
                    "cpu_seconds": cpu[variant],
                    "cpu_tokens_per_s": tokens / statistics.median(cpu[variant]),
                    "cpu_speedup_vs_naive": statistics.median(cpu_ratios) if cpu_ratios else None,
                    "load_average": loads[variant],
                }
            )
    return {"sources": sources, "examples": args.examples, "results": rows}


def compare_init(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.datasets import LightningModuleDataset
    from persona_shoppers.llm.models import resolve_model
    from persona_shoppers.sft.data import conversations, sample_split
    from persona_shoppers.sft.tokens import add_persona_tokens
    from persona_shoppers.sft.training import train_stage

    params = _params()
    stage = params["stage1"]
    codebook = LightningModuleDataset(str(ROOT / "data/06_models/vq_vae.pt")).load()
    codebook = codebook.codebook.embedding
    frame = pd.read_json(str(TRACES).format(1), lines=True)
    train = conversations(sample_split(frame, "train", args.examples, args.seed))
    val = conversations(sample_split(frame, "validation", args.val_examples, args.seed))
    folder = resolve_model(args.model, "data/06_models/hf")
    rows = []
    for init in ("mean", "codebook"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        persona = add_persona_tokens(model, tokenizer, codebook.shape[0], init, codebook)
        started = time.perf_counter()
        _, history = train_stage(
            model,
            tokenizer,
            persona,
            train,
            val,
            backbone="frozen",
            optimizer=stage["optimizer"],
            frozen_dtype=stage.get("frozen_dtype"),
            data=params["data"],
            trainer={**params["trainer"], "enable_progress_bar": False},
            seed=params["seed"],
            validate_before=True,
        )
        val_losses = [p["value"] for p in history["val_loss"]]
        rows.append(
            {
                "init": init,
                "steps": history["train_loss"][-1]["step"],
                "val_loss_before": val_losses[0],
                "val_loss_after": val_losses[-1],
                "seconds": time.perf_counter() - started,
            }
        )
        print(rows[-1], flush=True)
    return {"train_examples": len(train), "val_examples": len(val), "results": rows}


def _stage2_params(args: argparse.Namespace, **stage2: Any) -> dict:
    """The sft parameters for a stage-2 run from the default run's stage-1 model: no
    checkpoints, no progress bar, ``stage2`` settings, then the ``--set`` overrides."""
    if not STAGE1_MODEL.exists():
        raise SystemExit(f"{STAGE1_MODEL} is missing: run `kedro run --pipelines=sft` first")
    params = _params()
    params["checkpoint"] = {}
    params["trainer"] = {**params["trainer"], "enable_progress_bar": False}
    params["stage2"].update(stage2)
    for setting in args.set or []:
        _override(params, setting)
    return params


def _stage1_model():
    """The default run's stage-1 model and tokenizer (float32), a fresh copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.datasets import ModelAndTokenizer

    return ModelAndTokenizer(
        AutoModelForCausalLM.from_pretrained(STAGE1_MODEL, dtype=torch.float32),
        AutoTokenizer.from_pretrained(STAGE1_MODEL),
    )


def compare_budget(args: argparse.Namespace) -> dict:
    """Stage 2 (the pipeline's ``train_stage2`` node, default settings, no checkpoints) from
    the default run's stage-1 model with each of ``--budgets`` random training examples; for
    each, the mean action-type distribution (over all types, as ``sft_evaluation`` scores
    them) on up to ``--val-examples`` held-out steps per true next action. A model that reads
    the page puts more mass on the true action."""
    from persona_shoppers.agent.evaluation import action_type_distributions, step_prompts
    from persona_shoppers.llm.local import LocalLLM
    from persona_shoppers.pipelines.sft.nodes import TRAINING_SETTINGS, train_stage2
    from persona_shoppers.storefront import ACTION_TYPES

    stage2: dict[str, Any] = {}
    if args.stratify_by is not None:
        stage2["stratify_by"] = None if args.stratify_by == "none" else args.stratify_by
    if args.stage2_batch_size is not None:
        stage2["data"] = {"batch_size": args.stage2_batch_size}
    params = _stage2_params(args, **stage2)
    frame, held_out = _stage2_traces()
    batch_size = {**params["data"], **(params["stage2"].get("data") or {})}["batch_size"]
    rows = []
    for seed, budget in itertools.product(args.seeds or [params["seed"]], args.budgets):
        params["seed"] = seed
        stage1 = _stage1_model()
        params["stage2"] = {**params["stage2"], "max_examples": budget}
        started = time.perf_counter()
        training = {name: params[name] for name in TRAINING_SETTINGS}
        (trained, tokenizer), history = train_stage2(stage1, frame, params["stage2"], **training)
        seconds = time.perf_counter() - started
        folder = Path(args.keep_models or RESULTS) / f"sft_budget_{budget}_seed_{seed}"
        trained.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        llm = LocalLLM(str(folder), dtype="auto")
        for (page, action), steps in held_out.groupby(["page", "action"]):
            steps = steps.head(args.val_examples)
            probs = action_type_distributions(llm, step_prompts(steps))
            rows.append(
                {
                    "seed": seed,
                    "settings": " ".join(args.set or []),
                    "train_examples": int(history["train_kept"][-1]["value"]),
                    "stratify_by": params["stage2"].get("stratify_by"),
                    "batch_size": batch_size,
                    "optimizer_steps": history["train_loss"][-1]["step"],
                    "train_seconds": round(seconds, 1),
                    "page": page,
                    "true_action": action,
                    "steps": len(steps),
                    **{t: float(v) for t, v in zip(ACTION_TYPES, probs.mean(axis=0), strict=True)},
                }
            )
        if not args.keep_models:
            shutil.rmtree(folder)
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    # P(the human's next action), per (page, next action) cell, then averaged over the cells:
    # a model that learned only the marginal mix scores about 1 / 8 on the rare cells.
    table["p_true_action"] = [row[row["true_action"]] for _, row in table.iterrows()]
    summary = (
        table.groupby(["settings", "seed", "train_examples"])["p_true_action"]
        .agg(["mean", "min"])
        .reset_index()
    )
    print(summary.round(3).to_string(index=False))
    return {"results": rows, "summary": summary.to_dict("records")}


def learning_curve(args: argparse.Namespace) -> dict:
    """Stage 2 (``train_stage2``, the default settings with ``--set`` overrides, no
    checkpoints) from the default run's stage-1 model on ``--budgets[0]`` training traces,
    validated on ``--val-examples`` held-out steps at every ``trainer.val_check_interval``:
    held-out next-action accuracy and loss against examples seen and seconds, beside the
    majority and page-majority baselines of the same held-out steps. Draws the curve into
    ``--plot`` (a PNG)."""
    from persona_shoppers.agent.evaluation import page_modes
    from persona_shoppers.pipelines.sft.nodes import TRAINING_SETTINGS, train_stage2
    from persona_shoppers.sft.data import sample_split

    params = _stage2_params(args, max_examples=args.budgets[0], max_val_examples=args.val_examples)
    frame, _ = _stage2_traces()
    held_out = sample_split(frame, "validation", args.val_examples, params["seed"])
    train = frame[frame["split"] == "train"]
    page_mode = page_modes(train)
    baselines = {
        "majority": float(held_out["action"].value_counts(normalize=True).iloc[0]),
        "page_majority": float((held_out["page"].map(page_mode) == held_out["action"]).mean()),
    }
    training = {name: params[name] for name in TRAINING_SETTINGS}
    _, history = train_stage2(_stage1_model(), frame, params["stage2"], **training)
    data = {**params["data"], **(params["stage2"].get("data") or {})}
    per_step = data["batch_size"] * params["trainer"].get("accumulate_grad_batches", 1)
    seconds = {p["step"]: p["value"] for p in history.get("val_at_seconds", [])}
    loss = {p["step"]: p["value"] for p in history["val_loss"]}
    curve = [
        {
            "step": p["step"],
            "examples_seen": p["step"] * per_step,
            "seconds": seconds.get(p["step"], 0.0),
            "val_action_accuracy": p["value"],
            "val_loss": loss.get(p["step"]),
        }
        for p in history["val_action_accuracy"]
    ]
    print(pd.DataFrame(curve).round(3).to_string(index=False))
    print("baselines on the same held-out steps:", baselines)
    if args.plot:
        _plot_curve(curve, baselines, " ".join(args.set or []), Path(args.plot))
    return {
        "settings": args.set or [],
        "train_examples": args.budgets[0],
        "val_examples": len(held_out),
        "baselines": baselines,
        "curve": curve,
        "train_seconds": history["train_seconds"][-1]["value"],
        **_provenance(),
    }


def page_distribution(args: argparse.Namespace) -> dict:
    """The action-type distribution of the model in ``--page-distribution`` (a Hugging Face
    folder) on ``--val-examples`` held-out stage-2 steps of each kind of page (drawn with
    ``--seed``), as the simulation scores actions, beside the buyers' actions on the same
    steps; and P(add_to_cart) on ``--product-pages`` held-out product pages."""
    from persona_shoppers.agent.evaluation import action_type_distributions, step_prompts
    from persona_shoppers.llm.local import LocalLLM
    from persona_shoppers.storefront import ACTION_TYPES

    _, held_out = _stage2_traces()
    llm = LocalLLM(args.page_distribution, dtype="auto")

    def distributions(steps: pd.DataFrame):
        return action_type_distributions(llm, step_prompts(steps))

    pages = {}
    for page, steps in held_out.groupby("page"):
        steps = steps.sample(min(len(steps), args.val_examples), random_state=args.seed)
        probs = distributions(steps)
        pages[page] = {
            "steps": len(steps),
            "model": dict(zip(ACTION_TYPES, probs.mean(axis=0).round(3).tolist(), strict=True)),
            "buyers": steps["action"].value_counts(normalize=True).round(3).to_dict(),
        }
        print(page, pages[page])
    product = held_out[held_out["page"] == "product"]
    product = product.sample(min(len(product), args.product_pages), random_state=args.seed + 1)
    add_to_cart = {
        "pages": len(product),
        "model": float(distributions(product)[:, ACTION_TYPES.index("add_to_cart")].mean()),
        "buyers": float((product["action"] == "add_to_cart").mean()),
    }
    print("add to cart on product pages:", add_to_cart)
    return {
        "model": args.page_distribution,
        "pages": pages,
        "add_to_cart": add_to_cart,
        **_provenance(),
    }


_PRICE = re.compile(r"\$(\d+\.\d\d)")


def price_response(args: argparse.Namespace) -> dict:
    """The calibrated action-type mix of the model in ``--price-response`` on
    ``--product-pages`` held-out product pages (drawn with ``--seed``) as written and with every
    price times ``--price-multiplier``, each type's paired relative change with its interval
    (types the pages give under 0.001, such as purchase, left out)."""
    from persona_shoppers.agent.evaluation import action_scores, calibrated_scores
    from persona_shoppers.llm.local import LocalLLM
    from persona_shoppers.metrics.intervals import bootstrap_interval

    _, held_out = _stage2_traces()
    pages = held_out[held_out["page"] == "product"]
    pages = pages.sample(min(len(pages), args.product_pages), random_state=args.seed)
    multiplier = args.price_multiplier

    def reprice(text: str) -> str:
        return _PRICE.sub(lambda m: f"${round(float(m.group(1)) * multiplier, 2):.2f}", text)

    repriced = pages.assign(
        messages=[
            [system, {**user, "content": reprice(user["content"])}, *rest]
            for system, user, *rest in pages["messages"]
        ]
    )
    llm = LocalLLM(args.price_response, dtype="auto")
    calibration = "data/06_models/agent_action_calibration.json"
    bias = json.loads((ROOT / calibration).read_text())
    scores = {
        name: calibrated_scores(action_scores(llm, steps), bias["type_bias"])
        for name, steps in (("as_written", pages), ("repriced", repriced))
    }
    types = {}
    for column in [c for c in scores["as_written"].columns if c.startswith("p_")]:
        before = scores["as_written"][column].to_numpy()
        after = scores["repriced"][column].to_numpy()
        if before.mean() < 1e-3:
            continue

        def change(i, before=before, after=after):
            return after[i].mean() / before[i].mean() - 1

        low, high = bootstrap_interval(change, len(pages), 1000, args.seed)
        types[column.removeprefix("p_")] = {
            "as_written": round(float(before.mean()), 4),
            "repriced": round(float(after.mean()), 4),
            "relative_change": round(float(change(slice(None))), 4),
            "interval": [round(float(low), 4), round(float(high), 4)],
        }
        print(column, types[column.removeprefix("p_")])
    return {
        "model": args.price_response,
        "pages": len(pages),
        "price_multiplier": multiplier,
        "calibrated_with": calibration,
        "types": types,
        **_provenance(),
    }


# The funnel's decisions (a context and the action buyers take there), where the strata of
# buying differ: A purchases, B starts a checkout without paying, C adds to cart only.
DECISIONS = {
    "checkout|items|buy": "purchase",
    "cart|items|buy": "checkout",
    "product|items|buy": "checkout",
    "product|empty|buy": "add_to_cart",
}
SWAP_STRATUM = {"A": "C", "B": "C", "C": "A"}


def token_effect(args: argparse.Namespace) -> dict:
    """Whether the model in ``--token-effect`` reads its persona token where it matters: up to
    ``--per-stratum`` steps of each buying stratum in each of :data:`DECISIONS` (steps stage 2
    did not train on: held-out, and training steps outside its draw), scored with the buyer's
    own token and with the token of a random training buyer of the stratum
    :data:`SWAP_STRATUM` names; per context and stratum the buyers' rate of the decision's
    action beside the model's mean probability with each token, and over all steps the
    log-likelihood gain of the buyers' actions with the own token (an interval over steps)."""
    from persona_shoppers.agent.evaluation import step_contexts, token_swap_distributions
    from persona_shoppers.llm.local import LocalLLM
    from persona_shoppers.metrics.behaviour import token_swap_gain
    from persona_shoppers.pipelines.sft.nodes import _training_rows
    from persona_shoppers.storefront import ACTION_TYPES

    traces, _ = _stage2_traces()
    trained = pd.Index([])
    for params in _draw_settings(args):
        drawn, extra = _training_rows(traces, params["stage2"], params["seed"])
        trained = trained.union(drawn.index).union(extra.index)
    unseen = traces.drop(index=trained)
    unseen = unseen[unseen["split"].isin(["train", "validation"])]
    unseen = unseen.assign(context=step_contexts(unseen))
    assignments = pd.read_parquet(ROOT / "data" / "07_model_output" / "persona_assignments.parquet")
    training = assignments[assignments["split"] == "train"]
    tokens_of = {k: g["token"].to_numpy() for k, g in training.groupby("stratum")}
    rng = np.random.default_rng(args.seed)
    steps = pd.concat(
        [
            group.sample(min(len(group), args.per_stratum), random_state=args.seed)
            for (context, stratum), group in unseen.groupby(["context", "stratum"])
            if context in DECISIONS and stratum in SWAP_STRATUM
        ]
    )
    swapped_tokens = [int(rng.choice(tokens_of[SWAP_STRATUM[s]])) for s in steps["stratum"]]
    llm = LocalLLM(args.token_effect, dtype="auto")
    own, swapped = token_swap_distributions(llm, steps, swapped_tokens)
    taken = np.array([ACTION_TYPES.index(a) for a in steps["action"]])
    cells = {}
    for (context, stratum), index in steps.groupby(["context", "stratum"]).indices.items():
        column = ACTION_TYPES.index(DECISIONS[context])
        cells[f"{context} {stratum}"] = {
            "action": DECISIONS[context],
            "n": len(index),
            "buyers": round(float((taken[index] == column).mean()), 3),
            "own_token": round(float(own[index, column].mean()), 3),
            "swapped_token": round(float(swapped[index, column].mean()), 3),
            "swapped_to": SWAP_STRATUM[stratum],
        }
        print(f"{context:20s} {stratum} {cells[f'{context} {stratum}']}")
    by_context = {
        context: token_swap_gain(own[index], swapped[index], taken[index], seed=args.seed)
        for context, index in steps.groupby("context").indices.items()
    }
    overall = token_swap_gain(own, swapped, taken, seed=args.seed)
    print("log-likelihood gain of the buyers' actions with the own token:", overall)
    # What the token could tell: each evaluation buyer's stratum guessed as the most common
    # one among the training buyers of its token.
    guess = training.groupby("token")["stratum"].agg(lambda s: s.value_counts().index[0])
    held = assignments[(assignments["split"] == "eval") & assignments["token"].isin(guess.index)]
    shares = held["stratum"].value_counts(normalize=True)
    token_stratum = {
        "accuracy": round(float((held["token"].map(guess) == held["stratum"]).mean()), 3),
        "majority_stratum_share": round(float(shares.max()), 3),
        "n": len(held),
    }
    print("the stratum of evaluation buyers from their token:", token_stratum)
    return {
        "model": args.token_effect,
        "excluded_draws": ["conf/base", *(args.exclude_draw or [])],
        "token_stratum": token_stratum,
        "cells": cells,
        "gain": overall,
        "gain_by_context": by_context,
        **_provenance(),
    }


def query_temperatures(args: argparse.Namespace) -> dict:
    """``query_scores`` of the model in ``--queries`` on up to ``--val-examples`` held-out
    search steps (drawn with ``--seed``), at each of ``--temperatures`` (0: greedy)."""
    from persona_shoppers.agent.evaluation import (
        held_out_draw,
        query_scores,
        search_targets,
        step_prompts,
    )
    from persona_shoppers.features.embeddings import TextEmbedder
    from persona_shoppers.llm.base import prefilled
    from persona_shoppers.llm.local import LocalLLM

    _, held_out = _stage2_traces()
    searches = held_out[held_out["action"] == "search"]
    steps = held_out_draw(searches, args.val_examples, args.seed)
    llm = LocalLLM(args.queries, dtype="auto", prefix_cache_mb=4096)
    embedder = TextEmbedder(cache_dir=str(ROOT / "data" / "04_feature" / "embedding_cache"))
    targets = search_targets(held_out)
    by_temperature = {}
    with prefilled(llm, step_prompts(steps)):
        for temperature in args.temperatures:
            report = query_scores(
                llm, steps, targets, embedder, _max_query_tokens(), temperature, args.seed
            )
            by_temperature[str(temperature)] = report
            print(
                f"temperature {temperature}: cosine {report['cosine']:.3f} "
                f"{[round(x, 3) for x in report['cosine_interval']]}, "
                f"empty {report['empty_share']:.2f}, id-like {report['id_like_share']:.2f}, "
                f"title as query {report.get('title_as_query', {}).get('cosine', float('nan')):.3f}"
            )
    return {
        "model": args.queries,
        "search_steps": len(steps),
        "by_temperature": by_temperature,
        **_provenance(),
    }


def _unseen_shops() -> tuple[pd.DataFrame, pd.DataFrame, list[str], dict]:
    """(stage-2 traces, raw products, the shops without training traces, their stores)."""
    from persona_shoppers.storefront import build_stores

    frame, _ = _stage2_traces()
    raw = ROOT / "data" / "01_raw"
    products = pd.read_parquet(raw / "products.parquet")
    unseen = sorted(set(products["shop_id"]) - set(frame.loc[frame["split"] == "train", "shop_id"]))
    stores = build_stores(
        products,
        pd.read_parquet(raw / "collections.parquet"),
        pd.read_parquet(raw / "collection_products.parquet"),
        shops=unseen,
    )
    return frame, products, unseen, stores


def store_queries(args: argparse.Namespace) -> dict:
    """The first query an agent of the model in ``--store-queries`` writes on the home page of
    a shop SFT never saw (every shop without training traces), one agent per category of the
    shop, goal "You are here to buy <category>." and a persona token in use: the share whose
    results page lists no product and the share naming the goal's category, at each of
    ``--temperatures`` and ``--guidance``."""
    from persona_shoppers.agent.population import category_leaf
    from persona_shoppers.agent.prompts import SYSTEM_PROMPT, chat, intent_goal, user_turn
    from persona_shoppers.personas.token_format import persona_token

    frame, products, unseen, stores = _unseen_shops()
    tokens = sorted(frame["token"].unique())
    goals = [
        (shop, category)
        for shop in unseen
        for category in sorted(
            {category_leaf(c) for c in products.loc[products["shop_id"] == shop, "category"]}
        )
    ]
    prompts = [
        chat(
            SYSTEM_PROMPT,
            user_turn(
                intent_goal(category, "A"),
                stores[shop].start()[1].observation,
                profile=persona_token(int(tokens[i % len(tokens)])),
            ),
        )
        for i, (shop, category) in enumerate(goals)
    ]

    def figures(queries: list[str]) -> dict:
        found = [
            bool(stores[shop].search_results(q))
            for (shop, _), q in zip(goals, queries, strict=True)
        ]
        named = [c.lower() in q.lower() for (_, c), q in zip(goals, queries, strict=True)]
        return {
            "nothing_found_share": 1 - float(np.mean(found)),
            "names_category_share": float(np.mean(named)),
            "examples": [
                {"goal": c, "query": q} for (_, c), q in list(zip(goals, queries, strict=True))[:12]
            ],
        }

    settings = _written_queries(args, args.store_queries, prompts, figures)
    return {"model": args.store_queries, "shops": unseen, "settings": settings, **_provenance()}


def title_queries(args: argparse.Namespace) -> dict:
    """The query the model in ``--title-queries`` writes for each product title of
    ``--titles`` (default benchmarks/data/product_titles.txt: titles written as large
    retailers list products, none from the synthetic catalogs) with the alignment suite's
    query-generation prompt (``agent.tasks``: "Find this product: <title>." on the home page
    of an evaluation shop): the share of id-like queries, the MiniLM cosine of query and title
    and the share of the query's words that are in the title, at each of ``--temperatures``
    and ``--guidance``."""
    from persona_shoppers.agent.evaluation import is_id_like
    from persona_shoppers.agent.prompts import query_goal
    from persona_shoppers.agent.tasks import task_prompt
    from persona_shoppers.features.embeddings import TextEmbedder
    from persona_shoppers.metrics.text import rowwise_cosine

    titles = [t for t in Path(args.titles).read_text().splitlines() if t.strip()]
    _, _, unseen, stores = _unseen_shops()
    homes = [stores[unseen[i % len(unseen)]].start()[1].observation for i in range(len(titles))]
    prompts = [
        task_prompt(query_goal(t), home, None) for t, home in zip(titles, homes, strict=True)
    ]
    globals_ = _globals()
    embedder = TextEmbedder(globals_["embedding_model"], globals_["embedding_cache_dir"])
    title_vectors = embedder.embed(titles)

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower()))

    def figures(queries: list[str]) -> dict:
        cosine = rowwise_cosine(embedder.embed(queries), title_vectors)
        cosine[[not q for q in queries]] = 0.0
        in_title = [
            len(said & words(t)) / len(said) if (said := words(q)) else 0.0
            for q, t in zip(queries, titles, strict=True)
        ]
        return {
            "id_like_share": float(np.mean([is_id_like(q) for q in queries])),
            "cosine_to_title": float(cosine.mean()),
            "words_in_title_share": float(np.mean(in_title)),
            "examples": [
                {"title": t, "query": q} for t, q in list(zip(titles, queries, strict=True))[:12]
            ],
        }

    settings = _written_queries(args, args.title_queries, prompts, figures)
    return {
        "model": args.title_queries,
        "titles": args.titles,
        "settings": settings,
        **_provenance(),
    }


def _written_queries(args: argparse.Namespace, model: str, prompts: list, figures) -> dict:
    """``figures`` of the queries the local ``model`` writes on ``prompts`` (as the simulation
    writes them) at each of ``--temperatures`` x ``--guidance``, printed as they come."""
    from persona_shoppers.agent.rollout import write_queries
    from persona_shoppers.llm.local import LocalLLM

    llm = LocalLLM(model, dtype="auto")
    out = {}
    for temperature in args.temperatures:
        for guidance in args.guidance:
            queries = write_queries(
                llm, prompts, _max_query_tokens(), temperature, list(range(len(prompts))), guidance
            )
            found = {"n": len(queries), **figures(queries)}
            out[f"temperature {temperature}, guidance {guidance}"] = found
            shown = ", ".join(f"{k} {v:.2f}" for k, v in found.items() if isinstance(v, float))
            print(f"temperature {temperature}, guidance {guidance}: {shown} (n={len(queries)})")
    return out


def _provenance() -> dict:
    return {"command": " ".join(["python", *sys.argv]), "machine": machine_facts()}


def evaluate_model(args: argparse.Namespace) -> dict:
    """The ``sft_evaluation`` report of the model in ``--evaluate`` on the first
    ``--val-examples`` steps of the node's draw, with the node's settings."""
    from kedro.config import OmegaConfigLoader

    from persona_shoppers.agent.evaluation import (
        FUNNEL_CHECKS,
        evaluate_agent,
        evaluation_settings,
        evaluation_setup,
    )
    from persona_shoppers.llm import build_llm
    from persona_shoppers.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env="base", **CONFIG_LOADER_ARGS)
    parameters = loader["parameters"]
    evaluation = parameters["sft"]["evaluation"]
    frame, _ = _stage2_traces()
    held_out, tokens, modes, queries = evaluation_setup(frame, evaluation)
    llm = build_llm({**parameters["llm"], "model": args.evaluate, "cache": False})
    started = time.perf_counter()
    calibration = None
    if args.calibrate:
        from types import SimpleNamespace

        from persona_shoppers.pipelines.sft.nodes import calibrate_sft_agent

        sft = parameters["sft"]
        model = SimpleNamespace(folder=args.evaluate)
        calibration = calibrate_sft_agent(
            frame, model, sft["stage2"], sft["calibration"], sft["seed"], parameters["llm"]
        )
        calibration["seconds"] = round(time.perf_counter() - started, 1)
    report, _ = evaluate_agent(
        llm,
        held_out.iloc[: args.val_examples],
        tokens,
        modes,
        queries=queries,
        funnel_pool=held_out,
        type_bias=calibration["type_bias"] if calibration else None,
        **evaluation_settings(evaluation, "two_stage"),
    )
    report.update(
        calibration=calibration,
        seconds=round(time.perf_counter() - started, 1),
        model=args.evaluate,
        command=" ".join(["python", *sys.argv]),
        machine=machine_facts(),
    )
    shown = ("against_majority", "mean_p_next_action", *FUNNEL_CHECKS)
    for name, part in {"model": report, "calibrated": report.get("calibrated")}.items():
        if part:
            print(name, json.dumps({k: part.get(k) for k in shown}))
    return report


def _step_features(steps: pd.DataFrame) -> pd.DataFrame:
    """What a step's prompt says besides product text, as numbers (``--feature-baseline``)."""
    users = [m[1]["content"] for m in steps["messages"]]
    progress = [u.split("Progress:\n", 1)[1].split("\nPage:\n", 1)[0] for u in users]
    entries = [[line for line in p.split("\n") if line[:1].isdigit()] for p in progress]
    previous = [e[-1].split(" ", 2)[1] if e else "none" for e in entries]
    return pd.DataFrame(
        {
            "page": pd.Categorical(steps["page"]).codes,
            "stratum": pd.Categorical(steps["stratum"]).codes,
            "step": steps["step"].to_numpy(),
            "views": [p.count("viewed ") for p in progress],
            "searches": [p.count("searched ") for p in progress],
            "carted": [p.count("added ") for p in progress],
            "cart_empty": ["Cart: empty" in u for u in users],
            "previous": pd.Categorical(previous).codes,
        }
    )


def feature_baseline(args: argparse.Namespace) -> dict:
    """Held-out next-action accuracy of a gradient-boosted classifier on :func:`_step_features`
    (fit on the training steps) beside the majority action's; then with the persona token
    added, and with the planted buyer type added (where ``planted_truth.json`` has one: an
    answer key, read here only to bound what any persona could add)."""
    frame, _ = _stage2_traces()
    features = _step_features(frame)
    train = (frame["split"] == "train").to_numpy()
    held_out = (frame["split"] == "validation").to_numpy()
    actions = frame["action"].to_numpy()
    majority = pd.Series(actions[train]).mode()[0]
    extras = {"persona token": frame["token"].to_numpy()}
    buyer_types = _planted_buyer_types(frame)
    if buyer_types is not None:
        extras["planted buyer type"] = buyer_types
    fit = {"actions": actions, "train": train, "held_out": held_out, "majority": majority}
    classifiers = {"page and progress": _fit_classifier(features, **fit, seed=args.seed)}
    for name, column in extras.items():
        with_extra = features.assign(extra=_category_codes(column, train))
        classifiers[f"page and progress + {name}"] = _fit_classifier(
            with_extra, **fit, seed=args.seed
        )
    report = {
        "held_out_steps": int(held_out.sum()),
        "majority_accuracy": float((actions[held_out] == majority).mean()),
        "classifiers": classifiers,
        "features": list(features.columns),
        **_provenance(),
    }
    print(json.dumps(report, indent=1))
    return report


def _category_codes(values: np.ndarray, train: np.ndarray, most: int = 254) -> np.ndarray:
    """Codes of the ``most`` values most frequent on the training steps, the rest one more
    code: the classifier takes at most 255 categories."""
    kept = pd.Series(values[train]).value_counts().index[:most]
    return pd.Categorical(values, categories=kept).codes.astype(int) % (most + 1)


def _planted_buyer_types(frame: pd.DataFrame) -> np.ndarray | None:
    """Each step's planted buyer type, or None without a planted truth."""
    from persona_shoppers.synthetic.generator import planted_buyer_types

    if not PLANTED.exists():
        return None
    planted = json.loads(PLANTED.read_text())
    if not planted.get("buyer_type"):
        return None
    types = planted_buyer_types(planted)
    return frame[["shop_id", "buyer_id"]].merge(types, how="left")["buyer_type"].to_numpy()


def _fit_classifier(
    features: pd.DataFrame,
    actions: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    majority: str,
    seed: int,
) -> dict:
    """Held-out accuracy and mean P(the buyer's next action) of a gradient-boosted classifier
    fit on the training steps (categorical: the page, the previous action, any extra column),
    with a bootstrap 95% interval of its accuracy minus the ``majority`` action's."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from persona_shoppers.metrics.intervals import mean_interval

    categorical = [c in ("page", "previous", "extra") for c in features.columns]
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, random_state=seed, categorical_features=categorical
    ).fit(features[train], actions[train])
    truth = actions[held_out]
    classes = list(model.classes_)
    p_truth = model.predict_proba(features[held_out])[
        np.arange(len(truth)), [classes.index(a) for a in truth]
    ]
    gain = (model.predict(features[held_out]) == truth).astype(float) - (truth == majority)
    low, high = mean_interval(gain, draws=2000, seed=seed)
    return {
        "accuracy": float((gain + (truth == majority)).mean()),
        "minus_majority": float(gain.mean()),
        "minus_majority_interval": [float(low), float(high)],
        "mean_p_next_action": float(p_truth.mean()),
    }


def _plot_curve(curve: list[dict], baselines: dict, settings: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(
        [c["examples_seen"] for c in curve],
        [c["val_action_accuracy"] for c in curve],
        marker="o",
        label="stage 2",
    )
    for (name, value), style in zip(baselines.items(), (":", "--"), strict=True):
        ax.axhline(value, linestyle=style, color="grey", label=name.replace("_", " "))
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("held-out next-action accuracy")
    loss = ax.twinx()
    loss.plot(
        [c["examples_seen"] for c in curve],
        [c["val_loss"] for c in curve],
        color="tab:red",
        alpha=0.6,
        label="held-out loss (right)",
    )
    loss.set_ylabel("held-out loss per answer token")
    loss.legend(fontsize=8, loc="center right")
    ax.set_title(settings or "default settings", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-examples", type=int, default=64)
    parser.add_argument("--compare-init", action="store_true")
    parser.add_argument("--compare-budget", action="store_true")
    parser.add_argument("--learning-curve", action="store_true")
    parser.add_argument("--plot", default=None, help="--learning-curve: the PNG to draw")
    parser.add_argument("--page-distribution", default=None, metavar="MODEL_DIR")
    parser.add_argument("--product-pages", type=int, default=40)
    parser.add_argument("--price-response", default=None, metavar="MODEL_DIR")
    parser.add_argument("--price-multiplier", type=float, default=1.1)
    parser.add_argument("--queries", default=None, metavar="MODEL_DIR")
    parser.add_argument("--store-queries", default=None, metavar="MODEL_DIR")
    parser.add_argument("--title-queries", default=None, metavar="MODEL_DIR")
    parser.add_argument(
        "--titles", default=str(ROOT / "benchmarks" / "data" / "product_titles.txt")
    )
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--feature-baseline", action="store_true")
    parser.add_argument("--token-effect", default=None, metavar="MODEL_DIR")
    parser.add_argument("--per-stratum", type=int, default=40, help="--token-effect: steps")
    parser.add_argument(
        "--exclude-draw",
        action="append",
        metavar="YAML",
        help="--token-effect: also leave out the steps stage 2 draws with these sft parameters",
    )
    parser.add_argument("--evaluate", default=None, metavar="MODEL_DIR")
    parser.add_argument("--calibrate", action="store_true", help="--evaluate: calibrated too")
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.3, 0.7, 1.0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[64, 320])
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="stage-2 seeds (default: sft.seed)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="--compare-budget: an sft parameter, e.g. stage2.train_embeddings=false",
    )
    parser.add_argument("--stratify-by", default=None, help="stage-2 draw: page | none")
    parser.add_argument("--stage2-batch-size", type=int, default=None)
    parser.add_argument(
        "--keep-models", default=None, help="--compare-budget: keep each model in this folder"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    comparisons = {
        "compare_init": (compare_init, "init"),
        "compare_budget": (compare_budget, "budget"),
        "learning_curve": (learning_curve, "curve"),
        "page_distribution": (page_distribution, "pages"),
        "price_response": (price_response, "price_response"),
        "queries": (query_temperatures, "queries"),
        "store_queries": (store_queries, "store_queries"),
        "title_queries": (title_queries, "title_queries"),
        "feature_baseline": (feature_baseline, "feature_baseline"),
        "token_effect": (token_effect, "token_effect"),
        "evaluate": (evaluate_model, "evaluate"),
    }
    for flag, (compare, name) in comparisons.items():
        if getattr(args, flag):
            out = Path(args.out or RESULTS / f"bench_sft_{name}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(compare(args), indent=2) + "\n")
            print(f"wrote {out}")
            return

    started = time.perf_counter()
    report = bench(args)
    print(
        f"\n{'stage':>5} {'variant':<10} {'steps':>5} {'positions':>9} {'seconds':>8} "
        f"{'tokens/s':>9} {'speedup':>8} {'CPU tok/s':>10} {'CPU speedup':>12}"
    )

    def times(x: float | None) -> str:
        return f"{x:.2f}x" if x is not None else "-"

    for r in report["results"]:
        print(
            f"{r['stage']:>5} {r['variant']:<10} {r['steps']:>5} {r['positions_per_token']:>9.2f} "
            f"{r['median_seconds']:>8.1f} {r['tokens_per_s']:>9.0f} "
            f"{times(r['speedup_vs_naive']):>8} {r['cpu_tokens_per_s']:>10.0f} "
            f"{times(r['cpu_speedup_vs_naive']):>12}"
        )
    report.update(
        model=args.model,
        batch_size=args.batch_size,
        repeats=args.repeats,
        command=" ".join(["python", *sys.argv]),
        wall_seconds=round(time.perf_counter() - started),
        machine=machine_facts(),
    )
    out = Path(args.out or RESULTS / "bench_sft.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
