"""End to end: `kedro run --pipelines=data_enrichment` on the committed default sample.

The project (pyproject, conf, the raw sample) is copied to a temporary folder, so the run
writes its outputs and MLflow store there and leaves the working tree alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", path)
    (path / "src").mkdir()  # the package itself is installed (editable)
    shutil.copytree(ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    mlflow = path / "conf" / "base" / "mlflow.yml"
    mlflow.write_text(mlflow.read_text().replace("${project_root:}", path.as_posix()))
    shutil.copytree(ROOT / "data" / "01_raw", path / "data" / "01_raw")
    return path


@pytest.fixture(scope="module")
def enriched(project: Path) -> Path:
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["data_enrichment"])
    return project / "data"


@pytest.mark.integration
def test_data_enrichment_writes_its_outputs(enriched: Path):
    for relative in (
        "02_intermediate/event_quarantine.parquet",
        "02_intermediate/enriched_sessions.parquet",
        "03_primary/buyers.parquet",
        "03_primary/buyer_histories.parquet",
    ):
        assert (enriched / relative).exists(), relative


@pytest.mark.integration
def test_every_raw_event_is_enriched_or_quarantined(enriched: Path):
    raw = pl.read_parquet(enriched / "01_raw/events.parquet")
    kept = pl.read_parquet(enriched / "02_intermediate/enriched_events.parquet")
    quarantined = pl.read_parquet(enriched / "02_intermediate/event_quarantine.parquet")
    assert len(kept) + len(quarantined) == len(raw)
    rows = pl.concat([kept["source_row"], quarantined["source_row"]]).sort()
    assert rows.equals(pl.Series("source_row", range(len(raw)), dtype=rows.dtype))
    sessions = pl.read_parquet(enriched / "02_intermediate/enriched_sessions.parquet")
    assert sessions["n_events"].sum() == len(kept)


@pytest.mark.integration
def test_strata_a_to_d_occur_in_every_shop_and_e_occurs(enriched: Path):
    buyers = pd.read_parquet(enriched / "03_primary/buyers.parquet")
    per_shop = buyers.groupby("shop_id")["stratum"].apply(set)
    assert len(per_shop) == 12
    for shop, strata in per_shop.items():
        assert {"A", "B", "C", "D"} <= strata, shop
    assert (buyers["stratum"] == "E").any()
