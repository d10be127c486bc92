"""scripts/compare_outputs.py: same bytes, equal within a tolerance, or different."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

_SPEC = importlib.util.spec_from_file_location(
    "compare_outputs", Path(__file__).resolve().parents[1] / "scripts" / "compare_outputs.py"
)
compare_outputs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(compare_outputs)


def _parquet(path: Path, values: list[float]) -> Path:
    pd.DataFrame({"x": values, "name": ["a", "b"]}).to_parquet(path)
    return path


def test_tables_compare_by_bytes_then_by_tolerance(tmp_path):
    a = _parquet(tmp_path / "a.parquet", [0.1 + 0.2, 1.0])
    same = _parquet(tmp_path / "same.parquet", [0.1 + 0.2, 1.0])
    close = _parquet(tmp_path / "close.parquet", [0.3, 1.0])  # 0.1 + 0.2 != 0.3 in floats
    far = _parquet(tmp_path / "far.parquet", [0.3001, 1.0])
    assert compare_outputs.compare(a, same, 1e-9) is None
    assert compare_outputs.compare(a, close, 1e-9) == "equal within tolerance (bytes differ)"
    assert compare_outputs.compare(a, far, 1e-9) == "columns differ: ['x']"


def test_json_values_nested_in_lists_and_dicts(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"m": [1.0, {"k": 0.1 + 0.2}], "s": "x"}))
    b.write_text(json.dumps({"m": [1.0, {"k": 0.3}], "s": "x"}))
    assert compare_outputs.compare(a, b, 1e-9) == "equal within tolerance (bytes differ)"
    b.write_text(json.dumps({"m": [1.0, {"k": 0.3}], "s": "y"}))
    assert compare_outputs.compare(a, b, 1e-9) == "values differ"
