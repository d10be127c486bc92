"""Adapters from public e-commerce event-log formats to the raw data contract.

Each ``read_*`` function returns ``{"events", "products", "collections"}`` polars frames that
conform to :mod:`persona_shoppers.contract`; :func:`write_raw` stores them as
``events.parquet``, ``products.parquet`` and ``collections.parquet`` (``data/01_raw``).
See ``docs/bring_your_own_data.md`` and ``python -m persona_shoppers.adapters.cli --help``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import polars as pl

from persona_shoppers.adapters import otto, rees46, retailrocket
from persona_shoppers.adapters._common import (
    InputPath,
    concat_raw,
    read_raw,
    summarize,
    write_raw,
)
from persona_shoppers.adapters.otto import read_otto
from persona_shoppers.adapters.rees46 import read_rees46
from persona_shoppers.adapters.retailrocket import read_retailrocket

Reader = Callable[..., dict[str, pl.DataFrame]]

# format name -> module (with read function, DEFAULT_SHOP_ID, MISSING, DERIVED)
FORMATS: dict[str, ModuleType] = {
    "otto": otto,
    "rees46": rees46,
    "retailrocket": retailrocket,
}
READERS: dict[str, Reader] = {
    "otto": read_otto,
    "rees46": read_rees46,
    "retailrocket": read_retailrocket,
}

__all__ = [
    "FORMATS",
    "READERS",
    "InputPath",
    "concat_raw",
    "read_otto",
    "read_raw",
    "read_rees46",
    "read_retailrocket",
    "summarize",
    "write_raw",
]
