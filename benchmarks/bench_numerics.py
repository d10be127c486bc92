"""Benchmark the numerics behind ``auto`` (docs/numerics.md): matmul speed per dtype and shape,
and how many cores full-backbone SFT keeps busy per phase.

    python benchmarks/bench_numerics.py [--data data] [--examples 32] [--skip-sft]

- ``F.linear`` GFLOP/s in float32 and bfloat16 at decoding, prefill and training shapes of the
  default model (median of 3 after a warm-up);
- SFT phases (forward, backward, gradient clipping, fused AdamW step) of the default model with
  64 persona tokens on ``--examples`` stage-2 traces in flattened batches of 8, in float32:
  wall seconds, process CPU seconds, and their ratio (2.0 = both of 2 cores busy). Needs the
  traces and the converted model a default run leaves under ``--data``.

Prints both tables and writes ``benchmarks/results/numerics.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPES = ((1, 576, 1536), (8, 576, 1536), (64, 576, 1536), (256, 576, 1536), (1024, 1024, 1024))


def linear_gflops(rows: int, inputs: int, outputs: int, dtype: torch.dtype) -> float:
    x, w = torch.randn(rows, inputs).to(dtype), torch.randn(outputs, inputs).to(dtype)
    F.linear(x, w)
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        F.linear(x, w)
        seconds.append(time.perf_counter() - started)
    return 2 * rows * inputs * outputs / statistics.median(seconds) / 1e9


def sft_phases(data: Path, examples: int) -> dict[str, dict[str, float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_shoppers.sft.data import SFTDataModule, conversations, sample_split
    from persona_shoppers.sft.module import PersonaSFTModule
    from persona_shoppers.sft.tokens import add_persona_tokens, find_persona_tokens

    traces = pd.read_json(data / "05_model_input" / "sft_traces_stage2.jsonl", lines=True)
    folder = data / "06_models" / "hf" / "smollm2-135m-instruct"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    add_persona_tokens(model, tokenizer, count=64, init="mean", seed=0)
    persona = find_persona_tokens(tokenizer)
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="full", lr=5e-4)
    train = conversations(sample_split(traces, "train", examples, 0))
    batches = SFTDataModule(tokenizer, train, train[:8], seed=0, batch_size=8, flatten=True)
    batches.setup("fit")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4, fused=True)
    phases = {name: [0.0, 0.0] for name in ("forward", "backward", "clip", "step")}

    def timed(name: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        phases[name][0] += time.perf_counter() - wall
        phases[name][1] += time.process_time() - cpu
        return out

    for i, batch in enumerate(batches.train_dataloader()):
        out = timed("forward", lambda b=batch, i=i: module.training_step(b, i))
        loss = out["loss"] if isinstance(out, dict) else out
        timed("backward", loss.backward)
        timed("clip", lambda: torch.nn.utils.clip_grad_norm_(params, 1.0))
        timed("step", lambda: (optimizer.step(), optimizer.zero_grad()))
    return {
        name: {"wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall}
        for name, (wall, cpu) in phases.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--skip-sft", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = []
    print(f"{'rows x in x out':>20} {'float32':>9} {'bfloat16':>9}  GFLOP/s")
    for shape in SHAPES:
        row = {
            "shape": list(shape),
            "float32": linear_gflops(*shape, torch.float32),
            "bfloat16": linear_gflops(*shape, torch.bfloat16),
        }
        shapes.append(row)
        print(f"{' x '.join(map(str, shape)):>20} {row['float32']:9.1f} {row['bfloat16']:9.1f}")
    report = {"linear": shapes, "machine": machine_facts(sft_dtype="float32")}
    if not args.skip_sft:
        report["sft_phases"] = phases = sft_phases(args.data, args.examples)
        print(f"\n{'phase':>10} {'wall s':>8} {'CPU s':>8} {'cores busy':>11}")
        for name, row in phases.items():
            print(f"{name:>10} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} {row['cores_busy']:11.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "numerics.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
