"""Benchmark SFT training throughput on the default model (CPU): the project's way against
the naive way, for stage 1 (persona rows only) and stage 2 (every parameter).

    python benchmarks/bench_sft.py [--examples 32] [--batch-size 8] [--repeats 2]
                                   [--variants naive head_only bf16 project packed]
                                   [--model smollm2-135m-instruct]
    python benchmarks/bench_sft.py --compare-init [--examples 64] [--val-examples 64]

The examples are the first pipeline's real traces (``data/05_model_input/sft_traces_stage1
.jsonl``, training split, sampled with a seed) when they exist, else synthetic ones of about
400 tokens. Every variant trains on the same examples, from the same starting weights, with
AdamW; a step is forward, backward and optimizer step. Variants:

- ``naive``: the usual Hugging Face way: ``model(input_ids, attention_mask, labels)``, full
  logits at every position, fp32, batches in random order padded to their longest example;
  stage 1 trains the whole embedding matrix with a gradient hook that zeroes the old rows;
- ``head_only``: the LM head only at labelled (assistant) positions, fp32, same batches;
- ``bf16``: ``head_only`` under bf16 autocast;
- ``project``: the project's training step (``PersonaSFTModule.loss``): ``bf16`` plus
  length-grouped batches, position ids instead of an attention mask (plain causal attention)
  and a multi-tensor (foreach) AdamW; stage 1 trains a separate K-row parameter;
- ``packed``: ``project`` with several examples packed per row (``--pack-length`` tokens).

Throughput is training tokens (real, not padding) per second over all batches after one
warm-up batch; each measurement is repeated ``--repeats`` times, alternating variants, and
the best time is kept (the machine may be shared). Prints a table and writes
``benchmarks/results/sft.json``.

``--compare-init`` instead runs stage 1 of the sft pipeline (``train_stage`` with the stage-1
settings of ``conf/base/parameters_sft.yml``) once per persona-token init (``mean``,
``codebook`` from ``data/06_models/vq_vae.pt``) on the same ``--examples`` training and
``--val-examples`` validation traces, and reports the validation loss before and after
(``benchmarks/results/sft_init.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRACES = ROOT / "data" / "05_model_input" / "sft_traces_stage1.jsonl"
VARIANTS = ("naive", "head_only", "bf16", "project", "packed")


def _examples(n: int, seed: int) -> tuple[list[list[dict]], str]:
    from persona_shoppers.sft.data import conversations, sample_split

    if TRACES.exists():
        frame = pd.read_json(TRACES, lines=True)
        return conversations(sample_split(frame, "train", n, seed)), str(TRACES.relative_to(ROOT))
    sys.path.insert(0, str(ROOT))
    from tests.sft._traces import synthetic_traces

    frame = synthetic_traces(sessions=-(-n // 4), steps=4, num_tokens=256, products_per_page=10)
    return conversations(frame.head(n)), "synthetic (tests/sft/_traces.py)"


def _batches(examples, variant: str, batch_size: int, pack_length: int, seed: int) -> list:
    from persona_shoppers.sft.data import length_grouped_batches, pack_rows

    lengths = [len(e) for e in examples]
    if variant == "packed":
        rows = pack_rows(lengths, pack_length, seed)
        row_lengths = [sum(lengths[i] for i in row) for row in rows]
        groups = length_grouped_batches(row_lengths, batch_size, seed)
        return [[[examples[i] for i in rows[r]] for r in group] for group in groups]
    if variant == "project":
        groups = length_grouped_batches(lengths, batch_size, seed)
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
    """A function batch -> None doing forward, backward and an optimizer step."""
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
    autocast = not naive or variant == "bf16"

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
                loss = module.loss(collate_rows(rows, pad_id))[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.llm.models import resolve_model
    from persona_shoppers.sft.data import tokenize_examples
    from persona_shoppers.sft.tokens import add_persona_tokens

    folder = resolve_model(args.model, "data/06_models/hf")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    persona = add_persona_tokens(base, tokenizer, 256, init="mean", seed=0)
    conversations, source = _examples(args.examples, args.seed)
    examples, report = tokenize_examples(conversations, tokenizer, 1024)
    tokens = report.tokens
    pad_id = tokenizer.pad_token_id
    print(
        f"{len(examples)} examples from {source}: {tokens} tokens "
        f"({report.labelled_tokens} labelled), {tokens / len(examples):.0f} per example",
        flush=True,
    )
    rows = []
    for stage in args.stages:
        batches = {
            v: _batches(examples, v, args.batch_size, args.pack_length, args.seed)
            for v in args.variants
        }
        best = {v: float("inf") for v in args.variants}
        for _ in range(args.repeats):
            for variant in args.variants:
                model = copy.deepcopy(base).train()
                step = _step_fn(variant, stage, model, persona, pad_id)
                step(batches[variant][0])  # warm-up
                started = time.perf_counter()
                for batch in batches[variant]:
                    step(batch)
                best[variant] = min(best[variant], time.perf_counter() - started)
                print(f"stage {stage} {variant:<10} {best[variant]:8.1f}s", flush=True)
                del model, step
        for variant in args.variants:
            padded = sum(
                len(b) * max(sum(len(e) for e in row) for row in b) for b in batches[variant]
            )
            rows.append(
                {
                    "stage": stage,
                    "variant": variant,
                    "seconds": best[variant],
                    "steps": len(batches[variant]),
                    "tokens_per_s": tokens / best[variant],
                    "padding_share": 1 - tokens / padded,
                    "speedup_vs_naive": best.get("naive", float("nan")) / best[variant],
                }
            )
    return {"source": source, "examples": len(examples), "tokens": tokens, "results": rows}


def compare_init(args: argparse.Namespace) -> dict:
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.io import LightningModuleDataset
    from persona_shoppers.llm.models import resolve_model
    from persona_shoppers.sft.data import conversations, sample_split
    from persona_shoppers.sft.tokens import add_persona_tokens
    from persona_shoppers.sft.training import train_stage

    params = yaml.safe_load((ROOT / "conf/base/parameters_sft.yml").read_text())["sft"]
    stage = params["stage1"]
    codebook = LightningModuleDataset(str(ROOT / "data/06_models/vq_vae.pt")).load()
    codebook = codebook.codebook.embedding
    frame = pd.read_json(TRACES, lines=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pack-length", type=int, default=1024)
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-examples", type=int, default=64)
    parser.add_argument("--compare-init", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.compare_init:
        out = Path(args.out or RESULTS / "sft_init.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(compare_init(args), indent=2) + "\n")
        print(f"wrote {out}")
        return

    report = bench(args)
    print(
        f"\n{'stage':>5} {'variant':<10} {'steps':>5} {'seconds':>8} {'tokens/s':>9} "
        f"{'padding':>8} {'speedup':>8}"
    )
    for r in report["results"]:
        print(
            f"{r['stage']:>5} {r['variant']:<10} {r['steps']:>5} {r['seconds']:>8.1f} "
            f"{r['tokens_per_s']:>9.0f} {r['padding_share']:>8.1%} {r['speedup_vs_naive']:>7.2f}x"
        )
    report.update(
        model=args.model,
        batch_size=args.batch_size,
        machine={
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
    )
    out = Path(args.out or RESULTS / "sft.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
