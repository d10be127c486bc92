"""The notebooks under notebooks/ run headless (nbclient) on a small run of the project.

A temporary copy of the project (pyproject.toml, conf) gets small versions of the catalog
datasets the notebooks read, written through the project's own catalog entries:

- `buyers`, `enriched_sessions`: the real data_enrichment pipeline on a small generated sample;
- `persona_assignments` (one token per stratum and buyer-id parity, the pipeline tests' stand-in
  for a trained VQ-VAE), then `shop_persona_distributions` and `persona_cards` by the real
  persona_mining functions;
- `simulated_sessions`, `ab_test_results`: the real simulation pipeline with a tiny random
  Llama (so the agents act at random, but every column is what the pipeline writes);
- `alignment_metrics`: the alignment pipeline's session-generation, action-rate and A/B
  metric functions on those sessions, in its flat `{"<task>/<metric>/<condition>": value}`
  shape.

Each notebook then runs in a fresh kernel from the copy's notebooks/ folder, as a user opens it
(`%load_ext kedro.ipython`, `catalog.load(...)`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import mlflow
import nbformat
import pandas as pd
import polars as pl
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from nbclient import NotebookClient

from persona_shoppers.alignment.metrics import ab_metrics, action_rate_metrics, session_metrics
from persona_shoppers.alignment.naming import split_metric_name
from persona_shoppers.features.labels import AUX_HEADS, aux_labels, fit_aux_edges
from persona_shoppers.personas.cards import shop_distributions
from persona_shoppers.pipelines import simulation
from persona_shoppers.pipelines.persona_mining.nodes import build_persona_cards
from persona_shoppers.storefront import StoreVariant

from .llm.conftest import tiny_model_dir  # noqa: F401 (a fixture)
from .pipelines._kedro import (
    KeptDataset,
    agent_calibration_inputs,
    conf_params,
    enriched_sample,
    param_datasets,
    storefronts,
    text_personas,
    token_assignments,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
N_TOKENS = 10  # token_assignments: one token per (stratum A-E, buyer id parity)
CONDITIONS = ("base", "text_persona", "persona_token")  # all on the matched population


def _project(path: Path) -> Path:
    """pyproject.toml and conf/ of this project; the package itself is installed."""
    shutil.copy(ROOT / "pyproject.toml", path)
    (path / "src").mkdir()
    shutil.copytree(ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    (path / "notebooks").mkdir()
    mlflow_yml = path / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace("${project_root:}", path.as_posix()))
    return path


def _catalog(path: Path, names: list[str]) -> DataCatalog:
    """The project's own entries for ``names``, with their files under ``path``."""
    entries = yaml.safe_load((path / "conf" / "base" / "catalog.yml").read_text())

    def rebase(entry):
        if isinstance(entry, dict):
            return {k: str(path / v) if k == "filepath" else rebase(v) for k, v in entry.items()}
        return entry

    return DataCatalog.from_config({name: rebase(entries[name]) for name in names})


def _simulate(data, enriched: dict, assignments: pd.DataFrame, model_dir: Path) -> dict:
    """The simulation pipeline on the small sample with the tiny model."""
    params = conf_params("simulation")
    params["conditions"] = {name: params["conditions"][name] for name in CONDITIONS}
    params["populations"] = {
        "shop_sample_per_shop": 4,
        "matched_per_shop": 3,
        "ab_sample_per_shop": 2,
    }
    params["rollout"].update(max_steps=4, temperature=20.0, lockstep=8)
    params["ab_tests"]["tests"] = params["ab_tests"]["tests"][:2]
    llm = {**conf_params("llm"), "model": str(model_dir), "dtype": "float32"}
    model = SimpleNamespace(folder=model_dir)
    outputs = ("simulated_sessions", "ab_test_results")
    catalog = DataCatalog(
        {
            "shop_persona_distributions": MemoryDataset(shop_distributions(assignments, N_TOKENS)),
            "persona_assignments": MemoryDataset(assignments),
            "held_out_events": MemoryDataset(enriched["enriched_events"]),
            "text_personas": MemoryDataset(text_personas(assignments, 4)),
            "sft_model": MemoryDataset(model),
            "sft_model_single_stage": MemoryDataset(model),
            **agent_calibration_inputs(assignments),
            "storefronts": MemoryDataset(storefronts(data)),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            "planted_truth": MemoryDataset(data.planted_truth),
            **param_datasets(simulation=params, llm=llm),
            **{name: KeptDataset() for name in outputs},
        }
    )
    SequentialRunner().run(simulation.create_pipeline(), catalog)
    return {name: catalog.load(name) for name in outputs}


def _alignment_metrics(
    enriched_sessions: pl.DataFrame,
    buyers: pd.DataFrame,
    assignments: pd.DataFrame,
    simulated: dict,
) -> dict[str, float]:
    """The alignment pipeline's session-generation, action-rate and A/B numbers on the small
    run (its suite's other tasks need LLM answers to test cases)."""
    params = conf_params("alignment")
    seed, draws, population = params["seed"], 50, params["population"]
    sessions = simulated["simulated_sessions"]
    shops = sorted(sessions["shop_id"].unique())
    human = enriched_sessions.filter(pl.col("shop_id").is_in(shops)).to_pandas()
    max_count = params["session"]["max_count"]
    rates = action_rate_metrics(
        sessions, enriched_sessions, buyers, assignments, population, seed, draws
    )[0]
    return {
        **session_metrics(human, sessions, population, max_count, seed, draws)[0],
        **rates,
        **ab_metrics(simulated["ab_test_results"]),
    }


def _small_datasets(model_dir: Path) -> dict:
    """The datasets the notebooks read, from a small generated sample (module docstring)."""
    tests = (
        StoreVariant().with_changes("price_rise_10pct", price_multiplier=1.1),
        StoreVariant().with_changes("fewer_results_per_page", page_size=4),
    )
    data, enriched = enriched_sample(
        n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=60, ab_tests=tests
    )
    buyers = enriched["buyers"]
    assignments = token_assignments(buyers, data.planted_truth)
    bins = aux_labels(buyers, fit_aux_edges(buyers))
    features = buyers[["shop_id", "buyer_id"]].assign(
        **{f"{head}_bin": bins[:, i] for i, head in enumerate(AUX_HEADS)}
    )
    cards, _ = build_persona_cards(
        assignments,
        buyers,
        features,
        enriched["enriched_sessions"],
        data.products,
        SimpleNamespace(hparams=SimpleNamespace(num_codes=N_TOKENS)),
        top_categories=3,
    )
    simulated = _simulate(data, enriched, assignments, model_dir)
    sessions = simulated["simulated_sessions"]
    datasets = {
        "buyers": buyers,
        "enriched_sessions": enriched["enriched_sessions"],
        "persona_assignments": assignments,
        "shop_persona_distributions": shop_distributions(assignments, N_TOKENS),
        "persona_cards": cards,
        "simulated_sessions": sessions,
        "ab_test_results": simulated["ab_test_results"],
        "alignment_metrics": _alignment_metrics(
            enriched["enriched_sessions"], buyers, assignments, simulated
        ),
    }
    return datasets


def _mlflow_experiment(path: Path) -> str:
    """The project's MLflow experiment in the copy's store, as kedro-mlflow creates it."""
    config = yaml.safe_load((path / "conf" / "base" / "mlflow.yml").read_text())
    experiment = config["tracking"]["experiment"]
    client = mlflow.MlflowClient(f"sqlite:///{path.as_posix()}/mlflow.db")
    return client.create_experiment(
        experiment["name"], experiment["create_experiment_kwargs"]["artifact_location"]
    )


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model_dir: Path) -> tuple[Path, dict]:  # noqa: F811
    """A project copy holding the small run's datasets; the datasets, for the assertions."""
    path = _project(tmp_path_factory.mktemp("notebooks"))
    with ThreadPoolExecutor(1) as pool:
        # kedro-mlflow opens the MLflow store and its experiment in every kernel: both are
        # made here, meanwhile (~5 s), so that the kernels, which start together, do not race
        # to create them.
        store = pool.submit(_mlflow_experiment, path)
        datasets = _small_datasets(tiny_model_dir)
        store.result()
    catalog = _catalog(path, list(datasets))
    for name, value in datasets.items():
        catalog.save(name, value)
    return path, datasets


@pytest.fixture(scope="module")
def executed(small_run) -> dict[str, nbformat.NotebookNode | BaseException]:
    """Every notebook run in its own fresh kernel, all kernels at once (each spends most of
    its ~10 s importing the project's pipelines for `%load_ext kedro.ipython`)."""
    project, _ = small_run
    clients = [
        NotebookClient(
            nbformat.read(notebook, as_version=4),
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(project / "notebooks")}},
        )
        for notebook in NOTEBOOKS
    ]

    async def run_all() -> list:
        # CellExecutionError (the failing cell and its traceback) is kept per notebook.
        return await asyncio.gather(*(c.async_execute() for c in clients), return_exceptions=True)

    return {n.name: result for n, result in zip(NOTEBOOKS, asyncio.run(run_all()), strict=True)}


def _execute(executed: dict, notebook: Path) -> nbformat.NotebookNode:
    result = executed[notebook.name]
    if isinstance(result, BaseException):
        raise result
    return result


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the cells printed or displayed, and the number of images they drew."""
    texts, images = [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts.append(data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(texts), images


def test_the_notebooks_are_committed_without_outputs():
    assert [n.name for n in NOTEBOOKS] == [
        "01_buyers_and_strata.ipynb",
        "02_persona_cards.ipynb",
        "03_alignment.ipynb",
    ]
    for notebook in NOTEBOOKS:
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source == "%load_ext kedro.ipython", notebook.name
        assert all(not c.outputs and c.execution_count is None for c in code), notebook.name


@pytest.mark.integration
def test_buyers_and_strata_notebook(small_run, executed):
    project, datasets = small_run
    text, images = _outputs(_execute(executed, NOTEBOOKS[0]))
    buyers = datasets["buyers"]
    assert f"{len(buyers):,} buyer-shop rows, {buyers['shop_id'].nunique()} shops" in text
    assert images == 2  # stratum mix, feature distributions


@pytest.mark.integration
def test_persona_cards_notebook(small_run, executed):
    project, datasets = small_run
    text, images = _outputs(_execute(executed, NOTEBOOKS[1]))
    used = sum(1 for c in datasets["persona_cards"] if c["n_buyers"])
    assert f"{used} of {N_TOKENS} tokens hold training-shop buyers" in text
    assert "codebook perplexity over all buyers" in text
    assert images == 4  # stratum profiles, p_s(k) heatmap, top tokens per shop, usage


@pytest.mark.integration
def test_alignment_notebook(small_run, executed):
    project, datasets = small_run
    text, images = _outputs(_execute(executed, NOTEBOOKS[2]))
    metrics = datasets["alignment_metrics"]
    keys = [split_metric_name(key) for key in metrics]
    values = {k[:3]: v for k, v in zip(keys, metrics.values(), strict=True) if k[3] is None}
    assert {*CONDITIONS, "human_noise_floor"} <= {condition for _, _, condition in values}
    assert f"conditions: {sorted({c for _, _, c in values})}" in text
    assert f"{len(values)} numbers" in text
    ab = datasets["ab_test_results"]
    for status, count in ab["status"].value_counts().items():
        assert re.search(rf"\b{status}\s+{count}\b", text), status
    # a heatmap per task with a metric that two conditions report, then outcomes, count
    # distributions and A/B effects
    reported = defaultdict(set)
    for (task, metric, condition), value in values.items():
        if not math.isnan(value):
            reported[task, metric].add(condition)
    compared = {task for (task, _), conditions in reported.items() if len(conditions) >= 2}
    assert {"session", "action_rate"} <= compared
    assert images == len(compared) + 3
    assert json.loads((project / "data/08_reporting/alignment_metrics.json").read_text())
