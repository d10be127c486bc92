"""The vq_vae pipeline on a small generated sample (buyer features from random product
embeddings): Kedro's SequentialRunner on an in-memory catalog, a few epochs of a small
VQ-VAE and k-means."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.pipelines import vq_vae

from .._kedro import KeptDataset, conf_params, featured_sample, param_datasets

K = 8
EPOCHS = 2
OUTPUTS = (
    "vq_vae_model",
    "vq_vae_training_history",
    "kmeans_model",
    "clustering_metrics",
    "clustering_mlflow_metrics",
    "codebook_plots",
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated.*"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval.*"),
]


@pytest.fixture(scope="module")
def run():
    data, sample = featured_sample(
        pca_dim=4, n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=80
    )
    params = conf_params("vq_vae")
    params["model"].update(
        hidden_dims=[16], latent_dim=4, num_codes=K, reset_warmup=2, reset_every=2
    )
    params["trainer"].update(max_epochs=EPOCHS, enable_progress_bar=False)
    params["kmeans"].update(n_clusters=K, batch_size=64, n_init=1)
    params["batch_size"] = 32
    catalog = DataCatalog(
        {
            "buyer_features": MemoryDataset(sample["buyer_features"]),
            "planted_truth": MemoryDataset(data.planted_truth),
            **param_datasets(vq_vae=params),
            **{name: KeptDataset() for name in OUTPUTS},
        }
    )
    SequentialRunner().run(vq_vae.create_pipeline(), catalog)
    out = {name: catalog.load(name) for name in OUTPUTS}
    yield sample["buyer_features"], out
    plt.close("all")


def test_both_codebooks_have_k_codes_and_the_vq_vae_its_history(run):
    _, out = run
    model = out["vq_vae_model"]
    assert model.hparams.num_codes == K and not model.training
    assert out["kmeans_model"].cluster_centers_.shape[0] == K
    history = out["vq_vae_training_history"]
    assert [p["step"] for p in history["train_loss"]] == list(range(EPOCHS))


def test_table_1_for_both_methods_on_training_and_held_out_buyers(run):
    features, out = run
    report = out["clustering_metrics"]
    assert set(report) == {"vq_vae/train", "kmeans/train", "vq_vae/eval", "kmeans/eval"}
    assert "ari_planted" in report["vq_vae/eval"] and "ari_planted" not in report["vq_vae/train"]
    metrics = out["clustering_mlflow_metrics"]
    assert metrics and all(np.isfinite(m["value"]) and m["step"] == 0 for m in metrics.values())
    assert set(out["codebook_plots"]) == {"code_usage.png", "latent_by_stratum.png"}
    assert (features["split"] == "train").sum() > K
