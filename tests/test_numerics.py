"""``auto`` numerics: bf16 only where the probe finds it native; explicit settings always win."""

from __future__ import annotations

import json

import pytest

from persona_shoppers import numerics
from persona_shoppers.numerics import (
    Bf16Probe,
    bf16_probe,
    numerics_summary,
    resolve_dtype,
    resolve_frozen_dtype,
    resolve_precision,
)


def _probe(float32: float, bfloat16: float) -> Bf16Probe:
    return Bf16Probe("cpu", "AVX2", bfloat16 > float32, "probe", float32, bfloat16)


@pytest.fixture
def probe_reports(monkeypatch):
    """Inject what the probe reports: ``probe_reports(float32_gflops, bf16_gflops)``."""

    def inject(float32: float, bfloat16: float) -> None:
        monkeypatch.setattr(numerics, "bf16_probe", lambda device="cpu": _probe(float32, bfloat16))

    return inject


def test_auto_is_float32_where_the_probe_finds_bf16_slower(probe_reports):
    probe_reports(68.0, 0.9)
    assert resolve_dtype("auto") == "float32"
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_frozen_dtype("auto", "cpu") is None


def test_auto_is_bf16_where_the_probe_finds_it_faster(probe_reports):
    probe_reports(68.0, 110.0)
    assert resolve_dtype("auto") == "bfloat16"
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert resolve_frozen_dtype("auto", "cpu") == "bfloat16"


@pytest.mark.parametrize("float32, bfloat16", [(68.0, 0.9), (68.0, 110.0)])
def test_an_explicit_setting_is_never_overridden(probe_reports, float32, bfloat16):
    probe_reports(float32, bfloat16)
    for dtype in ("bfloat16", "float32", "float16"):
        assert resolve_dtype(dtype) == dtype
    for precision in ("bf16-mixed", "32-true", "16-mixed", None):
        assert resolve_precision(precision, "cpu") == precision
    for frozen in ("bfloat16", "float32", None):
        assert resolve_frozen_dtype(frozen, "cpu") == frozen


def test_the_summary_names_each_choice_and_the_probe(probe_reports):
    probe_reports(68.0, 0.9)
    line = numerics_summary(
        {"backend": "local", "dtype": "auto"},
        {"trainer": {"precision": "auto"}, "stage1": {"frozen_dtype": "auto"}},
    )
    assert line.startswith("llm=float32 sft=32-true frozen=as loaded")
    assert "bf16 0.9 vs float32 68.0 GFLOP/s" in line


def test_the_probe_is_measured_once_per_machine_then_read_from_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(numerics.CACHE_ENV, str(tmp_path))
    calls = []

    def measure() -> Bf16Probe:
        calls.append(1)
        return _probe(50.0, 5.0)

    monkeypatch.setattr(numerics, "measure_cpu_bf16", measure)
    bf16_probe.cache_clear()
    try:
        first = bf16_probe("cpu")
        bf16_probe.cache_clear()  # a new process: the file cache answers
        second = bf16_probe("cpu")
    finally:
        bf16_probe.cache_clear()
    assert calls == [1]
    assert first == second and not second.bf16_native
    stored = json.loads((tmp_path / "persona_shoppers" / "numerics.json").read_text())
    assert list(stored.values()) == [
        {
            "device": "cpu",
            "cpu_capability": "AVX2",
            "bf16_native": False,
            "method": "probe",
            "float32_gflops": 50.0,
            "bfloat16_gflops": 5.0,
        }
    ]


def test_the_real_probe_measures_both_dtypes():
    probe = numerics.measure_cpu_bf16()
    assert probe.float32_gflops > 0 and probe.bfloat16_gflops > 0
    assert probe.bf16_native == (probe.bfloat16_gflops > probe.float32_gflops)
    assert probe.cpu_capability == numerics.cpu_capability()
