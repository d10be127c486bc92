"""Numerics chosen by measurement: ``auto`` picks bfloat16 only where the device runs it
natively (CUDA's own answer, or a short cached probe on a CPU), float32 elsewhere; an explicit
dtype or precision in parameters is never overridden.

See docs/numerics.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

AUTO = "auto"
# (rows, in_features, out_features): batched decoding / choose, and prefill / training rows,
# through a feed-forward weight of the default model's size.
PROBE_SHAPES = ((8, 576, 1536), (64, 576, 1536))
PROBE_REPEATS = 3
CACHE_ENV = "PERSONA_SHOPPERS_CACHE_DIR"


@dataclass(frozen=True)
class Bf16Probe:
    """What the probe measured on one device: GFLOP/s of the probe shapes in each dtype."""

    device: str
    cpu_capability: str
    bf16_native: bool
    method: str  # "probe" (timed), "cuda" (``torch.cuda.is_bf16_supported``) or "not probed"
    float32_gflops: float | None = None
    bfloat16_gflops: float | None = None

    def describe(self) -> str:
        if self.method != "probe":
            state = "native" if self.bf16_native else "not native"
            return f"{self.device}: bf16 {state} ({self.method})"
        return (
            f"{self.device} ({self.cpu_capability}): bf16 {self.bfloat16_gflops:.1f} vs "
            f"float32 {self.float32_gflops:.1f} GFLOP/s"
        )


def cpu_capability() -> str:
    """PyTorch's CPU kernel level (``AVX2``, ``AVX512``, ...; ``ATEN_CPU_CAPABILITY`` lowers it)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: str) -> str:
    """What the probe's answer depends on: CPU model, kernel level, ISA overrides, threads,
    torch version and device."""
    import torch

    parts = [
        device,
        _cpu_model(),
        cpu_capability(),
        os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        str(torch.get_num_threads()),
        torch.__version__,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _time_linear(rows: int, inputs: int, outputs: int, dtype: Any) -> float:
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inputs, generator=generator).to(dtype)
    w = torch.randn(outputs, inputs, generator=generator).to(dtype)
    F.linear(x, w)  # warm-up: kernel selection, packing
    seconds = []
    for _ in range(PROBE_REPEATS):
        started = time.perf_counter()
        F.linear(x, w)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure_cpu_bf16() -> Bf16Probe:
    """Time the probe shapes on this CPU in float32 and bfloat16."""
    import torch

    flops = sum(2 * r * i * o for r, i, o in PROBE_SHAPES)
    gflops = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        seconds = sum(_time_linear(*shape, dtype) for shape in PROBE_SHAPES)
        gflops[name] = flops / seconds / 1e9
    native = gflops["bfloat16"] > gflops["float32"]
    return Bf16Probe(
        "cpu", cpu_capability(), native, "probe", gflops["float32"], gflops["bfloat16"]
    )


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base / "persona_shoppers" / "numerics.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def bf16_probe(device: str = "cpu") -> Bf16Probe:
    """Whether ``device`` runs bfloat16 natively: measured once per machine (file cache), then
    remembered for the process. Devices other than CPU and CUDA get float32."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        supported = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        probe = Bf16Probe(device, cpu_capability(), supported, "cuda")
    elif kind != "cpu":
        probe = Bf16Probe(device, cpu_capability(), False, "not probed")
    else:
        path, key = _cache_file(), machine_key(kind)
        cached = _read_cache(path).get(key)
        if cached:
            probe = Bf16Probe(**cached)
        else:
            probe = measure_cpu_bf16()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({**_read_cache(path), key: asdict(probe)}, indent=2))
            except OSError as exc:
                logger.debug("numerics probe not cached (%s): %s", path, exc)
    logger.info(
        "numerics: %s -> %s by default",
        probe.describe(),
        "bfloat16" if probe.bf16_native else "float32",
    )
    return probe


def resolve_dtype(requested: str, device: str = "cpu") -> str:
    """The model dtype name for ``requested`` (``auto``: bfloat16 where native, else float32;
    any other name is returned as given)."""
    if requested == AUTO:
        return "bfloat16" if bf16_probe(device).bf16_native else "float32"
    return str(requested)


def trainer_device(accelerator: str | None) -> str:
    """The torch device kind a Lightning ``accelerator`` setting trains on."""
    import torch

    name = str(accelerator or AUTO).lower()
    if name in ("gpu", "cuda") or (name == AUTO and torch.cuda.is_available()):
        return "cuda"
    return "cpu" if name in ("cpu", AUTO) else name


def resolve_precision(requested: str | None, accelerator: str | None = "cpu") -> str | None:
    """Lightning ``precision`` for ``requested`` (``auto``: ``bf16-mixed`` where bf16 is native
    on the accelerator's device, else ``32-true``; anything else, None included, as given)."""
    if requested == AUTO:
        return "bf16-mixed" if bf16_probe(trainer_device(accelerator)).bf16_native else "32-true"
    return requested


def resolve_frozen_dtype(requested: str | None, accelerator: str | None = "cpu") -> str | None:
    """The dtype frozen weights are held in while training: ``auto`` gives bfloat16 where it is
    native, else None (as loaded); None and explicit names are returned as given."""
    if requested == AUTO:
        return "bfloat16" if bf16_probe(trainer_device(accelerator)).bf16_native else None
    return requested


def numerics_summary(llm: dict[str, Any] | None, sft: dict[str, Any] | None) -> str:
    """One line of the numerics a run uses, for logs and the MLflow ``numerics`` tag."""
    parts = []
    device = "cpu"
    if llm is not None and str(llm.get("backend", "local")).lower() == "local":
        device = str(llm.get("device", "cpu"))
        parts.append(f"llm={resolve_dtype(llm.get('dtype', AUTO), device)}")
    if sft is not None:
        trainer = sft.get("trainer") or {}
        accelerator = trainer.get("accelerator", "cpu")
        precision = resolve_precision(trainer.get("precision"), accelerator) or "32-true"
        parts.append(f"sft={precision}")
        frozen = (sft.get("stage1") or {}).get("frozen_dtype")
        parts.append(f"frozen={resolve_frozen_dtype(frozen, accelerator) or 'as loaded'}")
        device = trainer_device(accelerator) if llm is None else device
    return f"{' '.join(parts)} [{bf16_probe(device).describe()}]"


def machine_facts(**chosen: Any) -> dict[str, Any]:
    """The machine a benchmark ran on, with the numerics it chose (``chosen``), for
    ``benchmarks/results/*.json``."""
    import torch

    probe = bf16_probe("cpu")
    return {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "processor": _cpu_model(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_capability": cpu_capability(),
        "bf16_probe": asdict(probe),
        **chosen,
    }
