"""The vq_vae pipeline: behaviour-aware VQ-VAE (Lightning) vs MiniBatch k-means."""

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_codebooks, fit_kmeans, train_vq_vae


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_vq_vae,
                ["buyer_features", "params:vq_vae"],
                ["vq_vae_model", "vq_vae_training_history"],
                name="train_vq_vae",
            ),
            node(
                fit_kmeans, ["buyer_features", "params:vq_vae"], "kmeans_model", name="fit_kmeans"
            ),
            node(
                evaluate_codebooks,
                [
                    "buyer_features",
                    "vq_vae_model",
                    "kmeans_model",
                    "planted_truth",
                    "params:vq_vae",
                ],
                ["clustering_metrics", "clustering_mlflow_metrics", "codebook_plots"],
                name="evaluate_codebooks",
            ),
        ]
    )
