"""An event-scale table split by buyer, as a folder of parquet parts: the streaming engine's
hand-off between data_enrichment and the stages after it (docs/scaling.md, "Logs larger than
memory")."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
from kedro.io import AbstractDataset, DatasetError

from persona_shoppers.clickstream.streaming import BuyerBuckets


class BuyerBucketsDataset(AbstractDataset[BuyerBuckets, BuyerBuckets]):
    """A folder of ``part-NNNNN.parquet`` files, one per bucket of buyers.

    ``load`` returns :class:`~persona_shoppers.clickstream.streaming.BuyerBuckets` over the
    parts (nothing is read until a part is); ``save`` copies the parts of a BuyerBuckets into
    a fresh folder and then replaces the old one, so a failed save leaves the old parts whole.

    ```yaml
    enriched_events:
      type: persona_shoppers.datasets.BuyerBucketsDataset
      path: data/02_intermediate/streaming/enriched_events
    ```
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> BuyerBuckets:
        parts = tuple(sorted(self._path.glob("part-*.parquet")))
        if not parts:
            raise DatasetError(
                f"{self._path} holds no part-*.parquet files: run data_enrichment with "
                "`--env streaming` first"
            )
        return BuyerBuckets(parts)

    def save(self, data: BuyerBuckets) -> None:
        if not isinstance(data, BuyerBuckets):
            raise DatasetError(
                f"{self._path}: BuyerBucketsDataset saves the streaming engine's BuyerBuckets, "
                f"got {type(data).__name__}"
            )
        staging = self._path.with_name(f"{self._path.name}.saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for number, part in enumerate(data.paths):
            target = staging / f"part-{number:05d}.parquet"
            if part.is_dir():  # a bucket written as several files
                pl.scan_parquet(part).sink_parquet(target)
            else:
                shutil.copyfile(part, target)
        shutil.rmtree(self._path, ignore_errors=True)
        staging.rename(self._path)

    def _exists(self) -> bool:
        return any(self._path.glob("part-*.parquet"))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": PurePosixPath(self._path)}
