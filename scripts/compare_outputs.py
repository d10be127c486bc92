"""Compare the datasets two runs wrote: same bytes, or the same table with floats equal to a
tolerance (a refactor that reorders floating-point sums), or different.

    .venv/bin/python scripts/compare_outputs.py RUN_A/data RUN_B/data [--tolerance 1e-9]

Reads ``02_intermediate`` ... ``08_reporting`` of both folders (model folders, caches and
checkpoints are skipped: they hold weights and timings, compared through what they produce).
Prints one line per file that is not byte-identical and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

LAYERS = (
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)
SKIPPED = ("06_models", "embedding_cache", "llm_cache", "sft_checkpoints")
TABLES = (".parquet", ".jsonl", ".csv")


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        if layer in SKIPPED or not (root / layer).is_dir():
            continue
        for path in sorted((root / layer).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not any(part in SKIPPED for part in path.parts):
                out[rel] = path
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


def _close(a: object, b: object, tolerance: float) -> bool:
    """Equal, with floats (also inside lists and dicts) equal to ``tolerance``."""
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return bool(np.isclose(a, b, rtol=tolerance, atol=tolerance, equal_nan=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list | tuple | np.ndarray) and isinstance(b, list | tuple | np.ndarray):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b) or (pd.isna(a) and pd.isna(b))
    except (TypeError, ValueError):
        return False


def compare(path_a: Path, path_b: Path, tolerance: float) -> str | None:
    """None when the files hold the same content, else why not."""
    if _digest(path_a) == _digest(path_b):
        return None
    if path_a.suffix in TABLES:
        a, b = _table(path_a), _table(path_b)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            return f"shape or columns differ: {a.shape} vs {b.shape}"
        bad = [
            c
            for c in a.columns
            if not all(_close(x, y, tolerance) for x, y in zip(a[c], b[c], strict=True))
        ]
        return f"columns differ: {bad}" if bad else "equal within tolerance (bytes differ)"
    if path_a.suffix == ".json":
        same = _close(json.loads(path_a.read_text()), json.loads(path_b.read_text()), tolerance)
        return "equal within tolerance (bytes differ)" if same else "values differ"
    return "bytes differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    args = parser.parse_args()
    files_a, files_b = _files(args.a), _files(args.b)
    differ = 0
    for rel in sorted(files_a.keys() | files_b.keys()):
        if rel not in files_a or rel not in files_b:
            print(f"{rel}: only in {'a' if rel in files_a else 'b'}")
            differ += 1
            continue
        why = compare(files_a[rel], files_b[rel], args.tolerance)
        if why is not None:
            print(f"{rel}: {why}")
            differ += not why.startswith("equal within tolerance")
    same = len(files_a.keys() & files_b.keys())
    print(f"{same} files in both; {differ} differ beyond {args.tolerance:g}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
