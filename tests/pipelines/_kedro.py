"""Helpers the pipeline tests share: run a pipeline slice on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path

import yaml
from kedro.io import MemoryDataset

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last consumer, so a test can read
    every output, intermediate ones included."""

    def _release(self) -> None:
        pass


def conf_params(name: str) -> dict:
    """The ``name`` block of conf/base/parameters_<name>.yml."""
    return yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())[name]
