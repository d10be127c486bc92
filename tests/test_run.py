"""End to end through Kedro sessions, as a user runs the project.

The project (pyproject, conf, raw data) is copied to a temporary folder, so runs write their
outputs and MLflow store there and leave the working tree alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from persona_shoppers.storefront import build_stores
from persona_shoppers.storefront.replay import replay_session
from persona_shoppers.synthetic import SyntheticConfig, generate

from ._real_format import real_format_raw
from .llm.conftest import tiny_model_dir  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def _project(path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", path)
    (path / "src").mkdir()  # the package itself is installed (editable)
    shutil.copytree(ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    mlflow_yml = path / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace("${project_root:}", path.as_posix()))
    return path


def _nested(dotted: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}, as `kedro run --params a.b=1` does."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _run(
    path: Path, pipelines: list[str], params: dict | None = None, env: str | None = None
) -> None:
    bootstrap_project(path)
    with KedroSession.create(
        project_path=path, env=env, runtime_params=_nested(params or {})
    ) as session:
        session.run(pipeline_names=pipelines)
    # kedro-mlflow 2.0.3 with MLflow 3 finishes the run in the store but leaves it on this
    # process's active-run stack; a second session in the same process would log into it.
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory) -> Path:
    """data_enrichment on the committed default sample."""
    path = _project(tmp_path_factory.mktemp("default"))
    shutil.copytree(ROOT / "data" / "01_raw", path / "data" / "01_raw")
    _run(path, ["data_enrichment"])
    return path / "data"


@pytest.mark.integration
def test_data_enrichment_writes_its_outputs(default_sample: Path):
    for relative in (
        "02_intermediate/event_quarantine.parquet",
        "02_intermediate/enriched_sessions.parquet",
        "03_primary/buyers.parquet",
        "03_primary/buyer_histories.parquet",
    ):
        assert (default_sample / relative).exists(), relative


@pytest.mark.integration
def test_every_raw_event_is_enriched_or_quarantined(default_sample: Path):
    raw = pl.read_parquet(default_sample / "01_raw/events.parquet")
    kept = pl.read_parquet(default_sample / "02_intermediate/enriched_events.parquet")
    quarantined = pl.read_parquet(default_sample / "02_intermediate/event_quarantine.parquet")
    assert len(kept) + len(quarantined) == len(raw)
    rows = pl.concat([kept["source_row"], quarantined["source_row"]]).sort()
    assert rows.equals(pl.Series("source_row", range(len(raw)), dtype=rows.dtype))
    sessions = pl.read_parquet(default_sample / "02_intermediate/enriched_sessions.parquet")
    assert sessions["n_events"].sum() == len(kept)


@pytest.mark.integration
def test_strata_a_to_d_occur_in_every_shop_and_e_occurs(default_sample: Path):
    buyers = pd.read_parquet(default_sample / "03_primary/buyers.parquet")
    per_shop = buyers.groupby("shop_id")["stratum"].apply(set)
    assert len(per_shop) == 12
    for shop, strata in per_shop.items():
        assert {"A", "B", "C", "D"} <= strata, shop
    assert (buyers["stratum"] == "E").any()


@pytest.mark.integration
def test_replay_covers_the_human_events_of_the_default_sample(default_sample: Path):
    """2,000 sessions drawn at random from all 12 shops replay in the store (issue: >= 95%)."""
    events = pl.read_parquet(default_sample / "02_intermediate/enriched_events.parquet")
    sessions = events["session_id"].unique().sort().sample(2000, seed=0)
    events = events.filter(pl.col("session_id").is_in(sessions.implode()))
    raw = default_sample / "01_raw"
    stores = build_stores(
        pd.read_parquet(raw / "products.parquet"),
        pd.read_parquet(raw / "collections.parquet"),
        pd.read_parquet(raw / "collection_products.parquet"),
    )
    n_events = n_replayed = 0
    for (shop, _), session in events.group_by("shop_id", "session_id"):
        replay = replay_session(stores[shop], session.to_dicts())
        n_events += replay.n_events
        n_replayed += replay.n_replayed
    assert n_events == len(events)
    assert n_replayed / n_events >= 0.95


TINY_PARAMS = {
    "feature_engineering.embedding_pca_dim": 8,
    "vq_vae.model.num_codes": 16,
    "vq_vae.model.reset_warmup": 4,
    "vq_vae.model.reset_every": 2,
    "vq_vae.kmeans.n_clusters": 16,
    "vq_vae.trainer.max_epochs": 2,
    "vq_vae.trainer.enable_progress_bar": False,
}


def _tiny_project(path: Path) -> Path:
    """The project with a tiny generated catalog as its raw data."""
    _project(path)
    # The default seed and shop count keep the default shop roles (eval_shops in conf/base).
    data = generate(SyntheticConfig(products_per_shop=40, buyers_per_shop=80), progress=False)
    raw = path / "data" / "01_raw"
    raw.mkdir(parents=True)
    data.events.write_parquet(raw / "events.parquet")
    data.products.to_parquet(raw / "products.parquet")
    data.collections.to_parquet(raw / "collections.parquet")
    data.collection_products.to_parquet(raw / "collection_products.parquet")
    (raw / "planted_truth.json").write_text(json.dumps(data.planted_truth))
    return path


@pytest.fixture(scope="module")
def tiny_chain(tmp_path_factory) -> Path:
    """data_enrichment -> feature_engineering -> vq_vae on a tiny generated catalog."""
    path = _tiny_project(tmp_path_factory.mktemp("tiny"))
    params = dict(TINY_PARAMS, run_name="tiny_chain")  # the MLflow run's name (mlflow.yml)
    params["feature_engineering.embedding_cache_dir"] = str(path / "data" / "04_feature" / "cache")
    _run(path, ["data_enrichment", "feature_engineering", "vq_vae"], params)
    return path


@pytest.mark.integration
def test_the_streaming_environment_gives_the_same_tables(tiny_chain: Path, tmp_path):
    """`kedro run --env streaming` (buyer buckets) on tiny_chain's data: the same buyers,
    histories, held-out events and buyer features as the default environment's run."""
    (path := tmp_path / "streaming").mkdir()
    _tiny_project(path)
    params = {key: value for key, value in TINY_PARAMS.items() if key.startswith("feature_")}
    params["data_enrichment.rows_per_bucket"] = 5000  # several buckets
    params["feature_engineering.embedding_cache_dir"] = str(tmp_path / "cache")
    _run(path, ["data_enrichment", "feature_engineering"], params, env="streaming")
    streamed, default = path / "data", tiny_chain / "data"
    parts = sorted((streamed / "02_intermediate/streaming/enriched_events").glob("part-*"))
    assert len(parts) > 1
    for table in ("03_primary/buyers", "04_feature/buyer_features"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(streamed / f"{table}.parquet"),
            pd.read_parquet(default / f"{table}.parquet"),
            obj=table,
        )
    histories = pl.read_parquet(streamed / "03_primary/streaming/buyer_histories/*.parquet")
    expected = pl.read_parquet(default / "03_primary/buyer_histories.parquet")
    assert histories.sort("shop_id", "buyer_id").equals(expected)
    held_out = "02_intermediate/held_out_events.parquet"
    assert pl.read_parquet(streamed / held_out).equals(pl.read_parquet(default / held_out))


@pytest.mark.integration
def test_vq_vae_chain_writes_models_and_metrics(tiny_chain: Path):
    data = tiny_chain / "data"
    for relative in (
        "04_feature/buyer_features.parquet",
        "06_models/feature_transformer.pkl",
        "06_models/vq_vae.pt",
        "08_reporting/clustering_metrics.json",
        "08_reporting/codebook_plots/code_usage.png",
    ):
        assert (data / relative).exists(), relative
    metrics = json.loads((data / "08_reporting/clustering_metrics.json").read_text())
    assert set(metrics) == {"vq_vae/train", "kmeans/train", "vq_vae/eval", "kmeans/eval"}
    assert "ari_planted" in metrics["vq_vae/eval"]


@pytest.mark.integration
def test_metrics_are_read_back_from_mlflow(tiny_chain: Path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_chain.as_posix()}/mlflow.db")
    experiment = client.get_experiment_by_name("persona_shoppers")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    metrics = run.data.metrics
    assert "clustering.vq_vae_train_stratum_purity_mean" in metrics
    assert 0 < metrics["clustering.vq_vae_train_stratum_purity_mean"] <= 1
    history = client.get_metric_history(run.info.run_id, "vq_vae.train_loss")
    assert [m.step for m in history] == [0, 1]
    assert run.data.params["vq_vae.model.num_codes"] == "16"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "plots/codebook_plots")]
    assert any(path.endswith("code_usage.png") for path in artifacts)


@pytest.mark.integration
def test_runs_are_named_and_tagged(tiny_chain: Path):
    """kedro-mlflow names the run (`--params run_name=...`), then the project's RunTagsHook
    tags it, so the UI can compare runs by pipeline, model and data."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_chain.as_posix()}/mlflow.db")
    experiment = client.get_experiment_by_name("persona_shoppers")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny_chain"
    tags = run.data.tags
    assert tags["pipeline"] == "data_enrichment+feature_engineering+vq_vae"
    assert tags["llm_model"] == "smollm2-135m-instruct"
    # The tiny sample is generated with other parameters than the committed default sample.
    assert tags["data"] == "synthetic seed=20261122 shops=12 buyers/shop=80"
    assert len(tags["data_fingerprint"]) == 12
    assert "conditions" not in tags  # nothing was simulated


# Every stage at the smallest size that still exercises it, on the tiny random model.
TINY_DEFAULT_RUN = {
    **TINY_PARAMS,
    "persona_mining.text_personas.n_buyers": 8,
    "persona_mining.text_personas.few_shot": 1,
    "sft.stage1.max_examples": 8,
    "sft.stage1.max_val_examples": 4,
    "sft.stage2.max_examples": 8,
    "sft.stage2.max_val_examples": 4,
    "sft.stage2.query_examples": 2,
    "sft.stage2.top_layers": 1,
    "sft.single_stage.max_examples": 4,
    "sft.single_stage.max_val_examples": 4,
    "sft.calibration.examples": 8,
    "sft.evaluation.examples": {"two_stage": 8, "zero_shot": 4, "single_stage": 4},
    "sft.evaluation.json_examples": 2,
    "sft.trainer.enable_progress_bar": False,
    "sft.checkpoint.dir": None,
    "simulation.rollout.max_steps": 4,
    "simulation.ab_tests.bootstrap_draws": 50,
    "alignment.cases.max_buyers": 4,
    "alignment.session.human_sessions": 50,
    "alignment.kde.n_samples": 50,
    "alignment.kde.repeats": 1,
    "alignment.permutation_draws": 100,
    "alignment.bootstrap_draws": 50,
    "alignment.instruction_following.max_steps": 5,
}


@pytest.fixture(scope="module")
def real_format_run(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811 (the fixture)
    """The default pipeline, from REES46 csv files through the adapter to the alignment
    report: no planted truth, no searches, no checkout events."""
    path = _project(tmp_path_factory.mktemp("real"))
    real_format_raw(path / "downloads", path / "data" / "01_raw")
    params = dict(TINY_DEFAULT_RUN, run_name="real_format")
    params["feature_engineering.eval_shops"] = None  # the generator's shop names are not here
    params["feature_engineering.n_eval_shops"] = 2
    params["feature_engineering.embedding_cache_dir"] = str(path / "data" / "04_feature" / "cache")
    params["llm.model"] = str(tiny_model_dir)
    params["llm.dtype"] = "float32"
    _run(path, ["__default__"], params)
    return path / "data"


@pytest.mark.integration
def test_a_real_format_log_runs_from_raw_files_to_the_report(real_format_run: Path):
    data = real_format_run
    assert not (data / "01_raw" / "planted_truth.json").exists()
    quarantine = pl.read_parquet(data / "02_intermediate/event_quarantine.parquet")
    reasons = quarantine.group_by("reason").len().sort("reason")
    # each shop's file had one unknown event type and one broken timestamp
    assert dict(reasons.iter_rows()) == {"unknown_event_type": 4, "unparsable_timestamp": 4}
    clustering = json.loads((data / "08_reporting/clustering_metrics.json").read_text())
    assert "ari_planted" not in clustering["vq_vae/eval"]
    personas = json.loads((data / "08_reporting/text_persona_metrics.json").read_text())
    assert "behaviour" in personas and "planted" not in personas
    sessions = pd.read_parquet(data / "07_model_output/simulated_sessions.parquet")
    assert {"base", "text_persona", "persona_token", "token_mismatch"} <= set(sessions["condition"])
    ab = pd.read_parquet(data / "08_reporting/ab_test_results.parquet")
    assert ab["reference_effect"].isna().all()  # none supplied, none planted
    report = (data / "08_reporting/alignment_report.md").read_text()
    for section in ("## Query generation", "## Rank selection"):  # REES46 has no searches
        after = report[report.index(section) :]
        assert after.split("\n## ")[0].count("_Not measured:") == 1
    assert (
        "## Item selection" in report
        and "_Not measured" not in report.split("## Item selection")[1].split("\n## ")[0]
    )
