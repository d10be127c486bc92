"""The vq_vae pipeline: behaviour-aware VQ-VAE (Lightning) vs MiniBatch k-means."""

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_codebooks, fit_kmeans, train_vq_vae


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_vq_vae,
                [
                    "buyer_features",
                    "params:vq_vae.seed",
                    "params:vq_vae.model",
                    "params:vq_vae.batch_size",
                    "params:vq_vae.trainer",
                ],
                ["vq_vae_model", "vq_vae_training_history"],
                name="train_vq_vae",
            ),
            node(
                fit_kmeans,
                ["buyer_features", "params:vq_vae.seed", "params:vq_vae.kmeans"],
                "kmeans_model",
                name="fit_kmeans",
            ),
            node(
                evaluate_codebooks,
                [
                    "buyer_features",
                    "vq_vae_model",
                    "kmeans_model",
                    "planted_truth",
                    "params:vq_vae.metrics",
                    "params:vq_vae.model.num_codes",
                ],
                ["clustering_metrics", "clustering_mlflow_metrics", "codebook_plots"],
                name="evaluate_codebooks",
            ),
        ]
    )
